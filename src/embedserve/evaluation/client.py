"""The embedserve HTTP API as the evaluation uses it: model listing, dense, sparse, rerank."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from embedserve.model_settings import PURPOSE_PROMPTS

TYPES = ("embeddings", "sparse-embeddings", "rerank")


@dataclass(frozen=True)
class SparseVector:
    """Vocabulary indices (ascending, 0-based) and their weights."""

    indices: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ModelInfo:
    id: str
    type: str
    dimension: int | None
    prompts: tuple[str, ...]
    default: bool = False
    prompt_texts: dict[str, str] = field(default_factory=dict)  # the listing's prompt_texts, where given

    def prompt_for(self, side: str) -> str | None:
        """The model's prompt for ``query`` or ``document`` (its own or the catalogue's), chosen as
        the server chooses one for Jina's ``retrieval.query`` / ``retrieval.passage``."""
        names = [name for name in PURPOSE_PROMPTS[side] if name in self.prompts]
        return next((name for name in names if self.prompt_texts.get(name)), names[0] if names else None)


class ServerError(RuntimeError):
    """The server answered with an error; the message carries its status and error body."""


class Client:
    """A blocking client for one server; ``batch_size`` inputs per embedding request."""

    def __init__(self, url: str, api_key: str | None = None, batch_size: int = 32, timeout: float = 600.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.batch_size = batch_size

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach the server at {self.http.base_url}: {exc}") from exc

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._send("POST", path, body)
        if response.status_code >= 400:
            raise ServerError(f"POST {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def _get(self, path: str) -> Any:
        response = self._send("GET", path)
        if response.status_code >= 400:
            raise ServerError(f"GET {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def models(self) -> list[ModelInfo]:
        """The catalogue from ``GET /api/v1/models``, in its order."""
        return [_model_info(m) for m in self._get("/api/v1/models")["models"]]

    def model(self, model_id: str) -> ModelInfo:
        """One model's listing (its dimension is known once it is loaded)."""
        return _model_info(self._get(f"/api/v1/models/{model_id}"))

    def default_models(self) -> dict[str, ModelInfo]:
        """Per type, the first model the listing flags ``default``, else the first of that type."""
        models = self.models()
        flagged = [m for m in models if m.default]
        chosen: dict[str, ModelInfo] = {}
        for info in flagged + models:
            chosen.setdefault(info.type, info)
        return chosen

    def embed(self, model: str, texts: Sequence[str], prompt_name: str | None = None, desc: str = "") -> np.ndarray:
        """Dense embeddings (float32 rows, input order), ``batch_size`` texts a request."""
        rows: list[list[float]] = []
        for chunk in self._chunks(texts, desc):
            body = self._body(model, chunk, prompt_name)
            rows.extend(item["embedding"] for item in _in_order(self._post("/api/v1/embeddings", body)["data"], chunk))
        return np.take(np.asarray(rows, dtype=np.float32), _inverse(texts), axis=0)

    def embed_sparse(
        self, model: str, texts: Sequence[str], prompt_name: str | None = None, desc: str = ""
    ) -> list[SparseVector]:
        """Sparse embeddings in input order, every non-zero weight kept."""
        vectors: list[SparseVector] = []
        for chunk in self._chunks(texts, desc):
            body = self._body(model, chunk, prompt_name)
            for item in _in_order(self._post("/api/v1/embed_sparse", body)["data"], chunk):
                indices = np.asarray(item["indices"], dtype=np.int64)
                vectors.append(SparseVector(indices, np.asarray(item["values"], dtype=np.float32)))
        return [vectors[i] for i in _inverse(texts)]

    @staticmethod
    def _body(model: str, chunk: list[str], prompt_name: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": chunk}
        if prompt_name:
            body["options"] = {"prompt_name": prompt_name}
        return body

    def rerank(self, model: str, query: str, documents: Sequence[str]) -> list[tuple[int, float]]:
        """(position in ``documents``, score) for every document, highest score first."""
        body = {"model": model, "query": query, "documents": list(documents), "return_documents": False}
        results = self._post("/api/v1/rerank", body)["results"]
        if sorted(r["index"] for r in results) != list(range(len(documents))):
            raise ServerError(f"rerank returned indices that are not 0..{len(documents) - 1}")
        return [(int(r["index"]), float(r["relevance_score"])) for r in results]

    def _chunks(self, texts: Sequence[str], desc: str) -> Iterator[list[str]]:
        """``batch_size`` texts at a time, longest first (a request pads to its longest text, so
        similar lengths together waste less), with a progress bar on stderr when ``desc`` is given."""
        ordered = [texts[i] for i in _by_length(texts)]
        chunks = [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        if not desc:
            yield from chunks
            return
        bar = tqdm(total=len(texts), desc=desc, unit="text", dynamic_ncols=True)
        try:
            for chunk in chunks:
                yield chunk
                bar.update(len(chunk))
        finally:
            bar.close()


def _by_length(texts: Sequence[str]) -> np.ndarray:
    return np.argsort(np.asarray([-len(t) for t in texts], dtype=np.int64), kind="stable")


def _inverse(texts: Sequence[str]) -> np.ndarray:
    """Where each input's result lies in the length-sorted order."""
    return np.argsort(_by_length(texts), kind="stable")


def _in_order(data: list[dict[str, Any]], chunk: Sequence[str]) -> list[dict[str, Any]]:
    by_index = {int(item["index"]): item for item in data}
    if sorted(by_index) != list(range(len(chunk))):
        raise ServerError(f"asked for {len(chunk)} embeddings, got indices {sorted(by_index)[:10]}")
    return [by_index[i] for i in range(len(chunk))]


def _model_info(entry: dict[str, Any]) -> ModelInfo:
    dimension = entry.get("dimension")
    return ModelInfo(
        id=str(entry["id"]),
        type=str(entry["type"]),
        dimension=int(dimension) if dimension else None,
        prompts=tuple(entry.get("prompts") or ()),
        default=entry.get("default") is True,
        prompt_texts={str(k): str(v.get("text", "")) for k, v in (entry.get("prompt_texts") or {}).items()},
    )
