"""The support matrix (``embedserve.families``): every family on every engine, against its library.

One tiny random model per family (``helpers.family_models``), built once per session. For each
engine a family allows, the engine's outputs equal the library's (fp32: dense cosine >= 0.9999,
sparse weights and rerank scores within 1e-4; int8: within the int8 tolerances the default
catalogue is held to, ``helpers.engines``), and a batch gives what its inputs give one by one.
For each engine a family does not allow, the model fails to load with one line naming the model,
the engine and what to use instead. The exports are cached for the session (conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.engines import INT8_ATOL
from helpers.family_models import FAMILY_OF, TinyModel
from helpers.server import ROOT

from embedserve import families
from embedserve.catalog import CatalogEntry, parse_catalog
from embedserve.engines import DenseEngine, Engine, RerankEngine, SparseEngine, create_engine

TEXTS = [
    "a",
    "heart attack",
    "What causes a heart attack? Blocked arteries starve the heart muscle of oxygen " * 2,
    "b c d",
]
QUERY = "what is a heart attack"
FP32_COSINE = 0.9999
FP32_ATOL = 1e-4
INT8_COSINE = 0.97  # the least cosine the default catalogue's int8 models are held to (helpers.engines)
CASES = [(model, engine) for model in FAMILY_OF for engine in families.ENGINES]


def _family(name: str, model: TinyModel) -> families.Family:
    return families.lookup(FAMILY_OF[name], model.type)


def _entry(name: str, model: TinyModel, engine: str) -> CatalogEntry:
    backend, _, quantize = engine.partition("-")
    data = {"name": str(model.path), "type": model.type, "device": "cpu", "backend": backend, **model.catalogue}
    data["quantize"] = quantize or "none"
    return parse_catalog({"models": {name: data}}, ROOT).entries[name]


# --- the libraries' outputs --------------------------------------------------------------------------------


def _sparse_rows(tensor: Any) -> np.ndarray:
    tensor = tensor.to_dense() if tensor.is_sparse else tensor
    return np.asarray(tensor.float().numpy())


def _reference(name: str, model: TinyModel) -> dict[str, np.ndarray]:
    """What the family's own library gives: {side: rows} (dense, sparse) or {"scores": ...}."""
    from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder

    path = str(model.path)
    if name == "dense-model2vec":
        from model2vec import StaticModel

        return {"document": StaticModel.from_pretrained(path).encode(TEXTS)}
    if model.type == "embeddings":
        st = SentenceTransformer(path, device="cpu")
        out = {"document": st.encode(TEXTS)}
        if "query" in model.catalogue.get("prompts", {}):
            out["query"] = st.encode(TEXTS, prompt=model.catalogue["prompts"]["query"])
        return out
    if model.type == "sparse-embeddings":
        se = SparseEncoder(path, device="cpu")
        out = {"document": _sparse_rows(se.encode(TEXTS, convert_to_tensor=True))}
        if name == "sparse-inference-free":
            out["query"] = _sparse_rows(se.encode_query(TEXTS, convert_to_tensor=True))
            out["document"] = _sparse_rows(se.encode_document(TEXTS, convert_to_tensor=True))
            out["default"] = _sparse_rows(se.encode(TEXTS, convert_to_tensor=True))
        return out
    ce = CrossEncoder(path, device="cpu")
    return {"scores": np.asarray(ce.predict([(QUERY, t) for t in TEXTS]), dtype=np.float32)}


@pytest.fixture(scope="module")
def references(family_models: dict[str, TinyModel]) -> dict[str, dict[str, np.ndarray]]:
    return {name: _reference(name, model) for name, model in family_models.items()}


# --- the engine's outputs ----------------------------------------------------------------------------------


def _together_and_alone(engine: Engine, units: list[Any]) -> tuple[Any, Any]:
    return engine.forward(units), [engine.forward([u])[0] for u in units]


def _sparse_dense(engine: SparseEngine, vectors: list[Any]) -> np.ndarray:
    rows = np.zeros((len(vectors), engine.dimension or 0), dtype=np.float32)
    for row, vector in zip(rows, vectors, strict=True):
        assert np.all(np.diff(vector.indices) > 0) and np.all(vector.values > 0)
        row[vector.indices] = vector.values
    return rows


def _served(engine: Engine, model: TinyModel, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(the batch's outputs, the same inputs one by one) on ``side``."""
    if isinstance(engine, RerankEngine):
        prepared = engine.encode_pairs(QUERY, TEXTS)
        together, alone = _together_and_alone(engine, prepared.units)
        return engine.scores(together, 0), engine.scores(np.asarray(alone), 0)
    assert isinstance(engine, DenseEngine | SparseEngine)
    prompt = model.catalogue.get("prompts", {}).get(side)
    task = None if side == "default" else side
    units = engine.encode_texts(TEXTS, prompt, task=task)
    together, alone = _together_and_alone(engine, units)
    if isinstance(engine, SparseEngine):
        return _sparse_dense(engine, together), _sparse_dense(engine, alone)
    return np.asarray(together), np.vstack(alone)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


@pytest.fixture(scope="module")
def loaded() -> Iterator[dict[str, Engine]]:
    """Engines by test case, closed at the end of the module."""
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.mark.parametrize(("name", "engine_name"), CASES, ids=[f"{m}-{e}" for m, e in CASES])
def test_family_on_engine(
    family_models: dict[str, TinyModel],
    references: dict[str, dict[str, np.ndarray]],
    name: str,
    engine_name: str,
) -> None:
    model = family_models[name]
    family = _family(name, model)
    entry = _entry(name, model, engine_name)
    if engine_name not in family.engines:
        with pytest.raises(ValueError) as refused:
            create_engine(entry)
        message = str(refused.value)
        assert "\n" not in message and f"model {name}:" in message
        assert f"cannot run on backend {engine_name.replace('-', ' + quantize ')}" in message
        assert "use backend torch" in message
        return
    engine = create_engine(entry)
    try:
        int8 = engine_name.endswith("int8")
        exported = engine_name != families.TORCH
        assert (getattr(engine, "runtime", None) is not None) == exported
        for side, expected in references[name].items():
            together, alone = _served(engine, model, side)
            # a batch gives what its inputs give alone (exported engines run each input alone, on a
            # session with fewer threads when the batch has several: float rounding apart)
            np.testing.assert_allclose(
                together, alone, atol=(1e-3 if int8 else 1e-6) if exported else 1e-5, err_msg=side
            )
            if model.type == "embeddings":
                least = float(_cosines(together, expected).min())
                assert least >= (INT8_COSINE if int8 else FP32_COSINE), f"{side}: cosine {least}"
            else:
                np.testing.assert_allclose(together, expected, atol=INT8_ATOL if int8 else FP32_ATOL, err_msg=side)
    finally:
        engine.close()


def test_every_family_has_a_test_model() -> None:
    tested = {(FAMILY_OF[name], kind) for name in FAMILY_OF for kind in [_type(name)]}
    assert {(f.key, f.type) for f in families.FAMILIES} == tested


def _type(name: str) -> str:
    return {"dense": "embeddings", "sparse": "sparse-embeddings", "rerank": "rerank"}[name.split("-")[0]]


@pytest.mark.parametrize("name", list(FAMILY_OF))
def test_family_is_detected_from_the_directory(family_models: dict[str, TinyModel], name: str) -> None:
    model = family_models[name]
    assert families.architecture(model.path) == FAMILY_OF[name]
    detected = families.detect(_entry(name, model, families.TORCH))
    assert detected is not None and detected.tested and detected.name == _family(name, model).name


def test_a_router_side_is_chosen_by_the_prompt_name(family_models: dict[str, TinyModel]) -> None:
    model = family_models["sparse-inference-free"]
    engine = create_engine(_entry("sparse-inference-free", model, families.TORCH))
    try:
        assert isinstance(engine, SparseEngine) and engine.tasks == ("query", "document")
        query = engine.encode_texts(["heart attack"], None, task="query")[0]
        document = engine.encode_texts(["heart attack"], None, task="document")[0]
        assert query.group != document.group  # never in one pass
        assert len(document.ids) == len(query.ids) + 2  # the static side reads no [CLS]/[SEP]
        assert engine.encode_texts(["heart attack"], None)[0] == document  # the router's default route
    finally:
        engine.close()


def test_an_unknown_architecture_is_not_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "mpnet"}')
    entry = parse_catalog({"models": {"m": {"name": str(tmp_path), "type": "embeddings", "backend": "onnx"}}}, ROOT)
    family = families.detect(entry.entries["m"])
    assert family is not None and not family.tested and family.name == "dense/mpnet"
    families.check_engine(entry.entries["m"], family)  # every engine allowed
