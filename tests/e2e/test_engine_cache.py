"""The export cache seen from the real server process: the first start exports and says so, the next reuses
and says so, a damaged entry is rebuilt (never loaded); the listing shows backend and quantize."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from helpers.server import running_server

TEXTS = ["hello world", "a somewhat longer sentence about heart attacks and their causes"]


def _serve_once(config: Path, cache: Path, log: Path) -> tuple[list[list[float]], dict[str, dict[str, str]], str]:
    with (
        running_server(config, extra_args=("--cache-dir", str(cache)), log_path=log) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        response = client.post("/api/v1/embeddings", json={"model": "tiny-int8", "input": TEXTS})
        assert response.status_code == 200, response.text
        listing = {m["id"]: m for m in client.get("/api/v1/models").json()["models"]}
        return [d["embedding"] for d in response.json()["data"]], listing, server.log()


@pytest.fixture(scope="module")
def config(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dense = str(tiny_models["dense"])
    models = {
        "tiny-int8": {"name": dense, "type": "embeddings", "backend": "onnx", "quantize": "int8"},
        "tiny-torch": {"name": dense, "type": "embeddings"},
    }
    path = tmp_path_factory.mktemp("engine-cache-e2e") / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def test_export_reuse_and_rebuild_across_starts(config: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, listing, log = _serve_once(config, cache, tmp_path / "first.log")
    assert (listing["tiny-int8"]["backend"], listing["tiny-int8"]["quantize"]) == ("onnx", "int8")
    assert (listing["tiny-torch"]["backend"], listing["tiny-torch"]["quantize"]) == ("torch", "none")
    assert "model tiny-int8: exporting to onnx int8 (first load" in log and "model tiny-int8: exported in" in log
    (entry,) = cache.iterdir()

    second, _, log = _serve_once(config, cache, tmp_path / "second.log")
    assert "model tiny-int8: using the cached onnx int8 export" in log and "exporting" not in log
    assert second == first

    model = entry / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a half-written file
    third, _, log = _serve_once(config, cache, tmp_path / "third.log")
    assert "is damaged (model.onnx fails its checksum); rebuilding it" in log
    assert "exporting to onnx int8" in log
    assert third == first
    assert [p.name for p in cache.iterdir()] == [entry.name]
