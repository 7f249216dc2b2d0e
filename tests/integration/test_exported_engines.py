"""backend onnx / openvino (with int8) on tiny models: the same outputs as the torch engine, the cache,
``embedserve export``, and the combinations that are refused."""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from asgi_lifespan import LifespanManager
from helpers.server import ROOT

from embedserve.api import create_app
from embedserve.catalog import CatalogEntry, parse_catalog
from embedserve.cli import main
from embedserve.engines import DenseEngine, Engine, RerankEngine, SparseEngine, create_engine
from embedserve.engines.runtimes import default_threads
from embedserve.settings import Settings

TEXTS = ["a", "b c", "hello world, this is a somewhat longer sentence " * 3, "heart attack"]
QUERY = "what is a heart attack"
KINDS = {
    "dense": ("embeddings", {}),
    "sparse": ("sparse-embeddings", {}),
    "rerank": ("rerank", {"engine": "cross-encoder"}),
}
# (backend, quantize, kinds checked): openvino-int8 on the dense model only, to keep the exports few
VARIANTS = [
    ("onnx", "none", ("dense", "sparse", "rerank")),
    ("onnx", "int8", ("dense", "sparse", "rerank")),
    ("openvino", "none", ("dense", "sparse", "rerank")),
    ("openvino", "int8", ("dense",)),
]
# fp32 exports equal torch to float rounding (OpenVINO's is pinned to f32 and its accuracy mode,
# runtimes.OpenVINORuntime, so no CPU runs it in bf16 or with dynamic quantization; measured on an
# AVX2 CPU: at most 1.8e-7 off torch on these models, with and without the pin); int8 is an
# approximation (random tiny weights: a few 1e-3)
TOLERANCE = {"none": 1e-5, "int8": 3e-2}


def _entry(tiny_models: dict[str, Path], kind: str, **options: Any) -> CatalogEntry:
    model_type, extra = KINDS[kind]
    data = {"name": str(tiny_models[kind]), "type": model_type, "device": "cpu", **extra, **options}
    return parse_catalog({"models": {f"tiny-{kind}": data}}, ROOT).entries[f"tiny-{kind}"]


def _outputs(engine: Engine, kind: str, atol: float = 1e-5) -> np.ndarray:
    if isinstance(engine, RerankEngine):
        prepared = engine.encode_pairs(QUERY, TEXTS)
        return np.asarray(engine.scores(engine.forward(prepared.units), prepared.query_units))
    if isinstance(engine, SparseEngine):
        dense = np.zeros((len(TEXTS), engine.dimension or 0), dtype=np.float32)
        for row, vector in zip(dense, engine.forward(engine.encode_texts(TEXTS, None)), strict=True):
            assert np.all(np.diff(vector.indices) > 0) and np.all(vector.values > 0)
            row[vector.indices] = vector.values
        return dense
    assert isinstance(engine, DenseEngine)
    units = engine.encode_texts(TEXTS, None)
    together = engine.forward(units)
    alone = np.vstack([engine.forward([u]) for u in units])  # padding must not change a row
    if getattr(engine, "runtime", None) is not None:
        # the exported engines run each input alone: a row is the same whatever its batch (int8's
        # dynamic activation scale included)
        np.testing.assert_array_equal(together, alone)
    np.testing.assert_allclose(together, alone, atol=atol)
    return np.asarray(together)


@pytest.fixture(scope="module")
def torch_outputs(tiny_models: dict[str, Path]) -> dict[str, np.ndarray]:
    out = {}
    for kind in KINDS:
        engine = create_engine(_entry(tiny_models, kind))
        out[kind] = _outputs(engine, kind)
        engine.close()
    return out


@pytest.mark.parametrize(("backend", "quantize", "kinds"), VARIANTS, ids=[f"{b}-{q}" for b, q, _ in VARIANTS])
def test_outputs_equal_torch(
    tiny_models: dict[str, Path], torch_outputs: dict[str, np.ndarray], backend: str, quantize: str, kinds: tuple[str]
) -> None:
    for kind in kinds:
        engine = create_engine(_entry(tiny_models, kind, backend=backend, quantize=quantize))
        try:
            assert engine.runtime is not None and engine.runtime.threads == default_threads()  # type: ignore[attr-defined]
            got = _outputs(engine, kind, TOLERANCE[quantize])
        finally:
            engine.close()
        np.testing.assert_allclose(got, torch_outputs[kind], atol=TOLERANCE[quantize], err_msg=f"{kind} {backend}")
        if quantize == "int8":  # an approximation, not the same numbers
            assert not np.array_equal(got, torch_outputs[kind])


def test_threads_setting_reaches_the_runtime(tiny_models: dict[str, Path]) -> None:
    engine = create_engine(_entry(tiny_models, "dense", backend="onnx", threads=1))
    try:
        lanes = engine.runtime  # type: ignore[attr-defined]
        assert (lanes.threads, lanes.streams, lanes.narrow) == (1, 1, [])
        assert lanes.wide.session.get_session_options().intra_op_num_threads == 1
    finally:
        engine.close()


def test_streams_split_the_threads_and_each_input_runs_alone(tiny_models: dict[str, Path]) -> None:
    engine = create_engine(_entry(tiny_models, "dense", backend="onnx", quantize="int8", threads=4, streams=2))
    try:
        lanes = engine.runtime  # type: ignore[attr-defined]
        assert lanes.wide.session.get_session_options().intra_op_num_threads == 4
        assert [n.session.get_session_options().intra_op_num_threads for n in lanes.narrow] == [2, 2]
        units = engine.encode_texts(TEXTS, None)
        # each lane sees batches of one; the rows come back in the inputs' order
        seen: list[int] = []
        for lane in [lanes.wide, *lanes.narrow]:
            run = lane.run
            lane.run = lambda arrays, run=run: seen.append(arrays["input_ids"].shape[0]) or run(arrays)
        together = engine.forward(units)
        assert set(seen) == {1} and len(seen) == len(TEXTS)
        for i, unit in enumerate(units):
            np.testing.assert_array_equal(engine.forward([unit])[0], together[i])
        np.testing.assert_array_equal(engine.forward(units[::-1]), together[::-1])
    finally:
        engine.close()


def test_each_stream_is_a_pass_of_its_own(tiny_models: dict[str, Path]) -> None:
    """Served, every stream is a batch thread taking up to 8 inputs a pass and a unit of the gate;
    a pass alone on the device runs on the wide session, one beside another on a narrow one, and
    both give the rows a whole-batch forward gives."""
    engine = create_engine(_entry(tiny_models, "dense", backend="onnx", quantize="int8", threads=2, streams=2))
    try:
        assert (engine.passes, engine.shares_device, engine.max_batch_size) == (2, True, 8)
        lanes = engine.runtime  # type: ignore[attr-defined]
        units = engine.encode_texts(TEXTS, None)
        together = engine.forward(units)
        used: list[object] = []
        for lane in [lanes.wide, *lanes.narrow]:
            run = lane.run
            lane.run = lambda arrays, run=run, lane=lane: used.append(lane) or run(arrays)
        rows: list[Any] = []

        def batch_thread(unit: Any, passes: int) -> None:
            engine.pass_threads(passes)
            rows.append(engine.forward([unit]))

        for i, unit in enumerate(units):
            thread = threading.Thread(target=batch_thread, args=(unit, 1 + i % 2))
            thread.start()
            thread.join()
        assert used[0::2] == [lanes.wide] * len(used[0::2]) and lanes.wide not in used[1::2]
        np.testing.assert_array_equal(np.concatenate(rows), together)
    finally:
        engine.close()


def test_pooling_without_the_prompt_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_models["dense"], tmp_path / "dense")
    pooling = copy / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "include_prompt": False}))
    entry = parse_catalog({"models": {"no-prompt": {"name": str(copy), "type": "embeddings", "backend": "onnx"}}}, ROOT)
    with pytest.raises(ValueError, match=r"backend onnx cannot run this model.*include_prompt"):
        create_engine(entry.entries["no-prompt"])


@pytest.fixture
def catalogue(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    data = {
        "models": {
            "tiny-dense-int8": {
                "name": str(tiny_models["dense"]),
                "type": "embeddings",
                "backend": "onnx",
                "quantize": "int8",
            },
            "tiny-rerank-ov": {"name": str(tiny_models["rerank"]), "type": "rerank", "backend": "openvino"},
            "tiny-torch": {"name": str(tiny_models["dense"]), "type": "embeddings"},
        }
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(tmp_path / "unused"))  # restored after the CLI overrides it
    yield tmp_path / "cache"


def test_export_command_builds_then_reuses(
    catalogue: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["export", "--config", str(catalogue), "--cache-dir", str(cache_dir)]
    with caplog.at_level(logging.INFO, logger="embedserve.engines.export"):
        assert main(argv) == 0
    assert "2 model(s) exported or already cached" in capsys.readouterr().out
    entries = sorted(p.name for p in cache_dir.iterdir())
    assert len(entries) == 2 and any("-dense-onnx-int8-" in e for e in entries)
    assert any("-cross-encoder-openvino-" in e for e in entries)
    assert sum("exporting to" in r.getMessage() for r in caplog.records) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="embedserve.engines.export"):
        assert main([*argv, "tiny-rerank-ov"]) == 0
    assert [r.getMessage().split(":")[1].strip().split(" /")[0] for r in caplog.records] == [
        "using the cached openvino export"
    ]
    assert sorted(p.name for p in cache_dir.iterdir()) == entries


def test_export_command_refuses_torch_and_unknown_models(
    catalogue: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", "--config", str(catalogue), "--cache-dir", str(cache_dir)]
    assert main([*argv, "tiny-torch"]) == 2
    assert "tiny-torch use backend torch: nothing to export" in capsys.readouterr().err
    assert main([*argv, "nope"]) == 2
    assert "unknown model(s): nope" in capsys.readouterr().err
    assert not cache_dir.exists()


@pytest.mark.anyio
async def test_the_app_keeps_exports_where_its_settings_say(
    tiny_models: dict[str, Path], engine_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``create_app(Settings(cache_dir=...))``, not the environment, decides where exports go (the
    run's cache, so the dense onnx export is shared with the tests above)."""
    elsewhere = tmp_path / "from-the-environment"
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(elsewhere))
    catalog = parse_catalog(
        {
            "models": {
                "tiny-onnx": {
                    "name": str(tiny_models["dense"]),
                    "type": "embeddings",
                    "backend": "onnx",
                    "device": "cpu",
                }
            }
        },
        ROOT,
    )
    app = create_app(Settings(cache_dir=engine_cache, lazy=True), catalog)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as client:
            response = await client.post("/v1/embeddings", json={"model": "tiny-onnx", "input": ["a"]})
    assert response.status_code == 200, response.text
    assert any("-dense-onnx-" in p.name for p in engine_cache.iterdir())
    assert not elsewhere.exists()


def test_an_openvino_export_sends_no_telemetry(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO's converter reports usage to Google Analytics from a forked process unless stopped
    (export.no_telemetry): any lookup of a host that is not this machine is written down (the file
    outlives a fork) and refused."""
    lookups = tmp_path / "lookups"
    real = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("localhost", "127.0.0.1", "::1", None):
            with open(lookups, "a") as f:
                f.write(f"{host}\n")
            raise OSError("no network in this test")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(tmp_path / "cache"))  # a fresh export, not the cached one
    engine = create_engine(_entry(tiny_models, "dense", backend="openvino", quantize="int8"))
    engine.close()
    time.sleep(1.0)  # a forked sender would have looked its host up by now
    for child in multiprocessing.active_children():
        child.join(5)
    assert not lookups.exists(), lookups.read_text()


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_cross_encoder_exports_trace_the_first_token_last_layer_and_equal_predict(
    tiny_models: dict[str, Path], tmp_path: Path, quantize: str
) -> None:
    """The export is of the model with its last layer for the first token only (engines/first_token.py):
    its key says so (so an export of the full layer is never loaded for it), its graph slices the
    first token before the last layer's query, and its scores are the library's."""
    import onnx
    from sentence_transformers import CrossEncoder

    from embedserve.engines.base import EngineOptions

    entry = _entry(tiny_models, "rerank", backend="onnx", quantize=quantize)
    engine = create_engine(entry, EngineOptions(cache_dir=tmp_path))
    try:
        assert engine.export_variant == "first-token-last-layer"  # type: ignore[attr-defined]
        prepared = engine.encode_pairs(QUERY, TEXTS)  # type: ignore[attr-defined]
        got = engine.scores(engine.forward(prepared.units), prepared.query_units)  # type: ignore[attr-defined]
    finally:
        engine.close()
    (entry_dir,) = [p for p in tmp_path.iterdir() if "-cross-encoder-onnx" in p.name]
    manifest = json.loads((entry_dir / "manifest.json").read_text())
    assert manifest["key"]["variant"] == "first-token-last-layer"
    graph = onnx.load(str(entry_dir / "model.onnx")).graph
    last = [n for n in graph.node if "/encoder/layer.1/" in n.name]
    query = next(i for i, n in enumerate(last) if "query/MatMul" in n.name)
    assert any(n.op_type == "Slice" for n in last[:query]), "the last layer's query reads every token"
    library = CrossEncoder(str(tiny_models["rerank"]), device="cpu").predict([(QUERY, d) for d in TEXTS])
    np.testing.assert_allclose(got, library, atol=TOLERANCE[quantize])
