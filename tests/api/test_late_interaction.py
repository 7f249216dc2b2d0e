"""The ``late-interaction`` reranker in-process: MaxSim over a ColBERT's two sides and over a plain
SentenceTransformer's token embeddings, each equal to the library's own encoding and scoring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from helpers.app_client import app_client
from helpers.server import ROOT
from sentence_transformers import SentenceTransformer
from sentence_transformers.multi_vector_encoder import MultiVectorEncoder

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
QUERY = "what pumps blood through the body?"
DOCS = ["the heart pumps blood", "a recipe for apple pie, with cinnamon!", "football results", "heart; blood; body."]


@pytest.fixture(scope="module")
async def client(tiny_models: dict[str, Path], tiny_colbert: Path) -> AsyncIterator[httpx.AsyncClient]:
    models = {
        "li-colbert": {"name": str(tiny_colbert), "type": "rerank", "engine": "late-interaction", "device": "cpu"},
        "li-dense": {
            "name": str(tiny_models["dense"]),
            "type": "rerank",
            "engine": "late-interaction",
            "device": "cpu",
        },
    }
    app: FastAPI = create_app(Settings(), parse_catalog({"models": models}, ROOT))
    async with app_client(app) as c:
        yield c


async def _scores(client: httpx.AsyncClient, model: str) -> np.ndarray:
    body = {"model": model, "query": QUERY, "documents": DOCS, "return_documents": False}
    response = await client.post("/api/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["relevance_score"] for r in results] == sorted((r["relevance_score"] for r in results), reverse=True)
    scores = np.zeros(len(DOCS), dtype=np.float32)
    for r in results:
        scores[r["index"]] = r["relevance_score"]
    return scores


async def test_colbert_scores_are_the_library_maxsim(client: httpx.AsyncClient, tiny_colbert: Path) -> None:
    library = MultiVectorEncoder(str(tiny_colbert), device="cpu")
    expected = library.similarity(library.encode_query([QUERY]), library.encode_document(DOCS))[0].numpy()
    np.testing.assert_allclose(await _scores(client, "li-colbert"), expected, rtol=1e-5, atol=1e-5)


async def test_plain_model_scores_mean_maxsim_of_its_token_embeddings(
    client: httpx.AsyncClient, tiny_models: dict[str, Path]
) -> None:
    library = SentenceTransformer(str(tiny_models["dense"]), device="cpu")

    def tokens(text: str) -> torch.Tensor:
        out = library.encode(text, output_value="token_embeddings", convert_to_tensor=True)
        return torch.nn.functional.normalize(out, dim=-1)

    query = tokens(QUERY)
    expected = [float((query @ tokens(d).T).max(dim=1).values.mean()) for d in DOCS]
    scores = await _scores(client, "li-dense")
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert np.all(scores <= 1.0 + 1e-6) and np.all(scores >= -1.0 - 1e-6)
