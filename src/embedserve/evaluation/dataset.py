"""BEIR-format datasets: ``corpus.jsonl`` (or ``.jsonl.gz``), ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

Qrels = dict[str, dict[str, int]]
"""Query id → {document id → graded relevance}; only relevance above 0 is kept."""


@dataclass(frozen=True)
class Dataset:
    """A corpus (document id → text), the queries of one split, and their judgements."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels


def document_text(title: str, text: str) -> str:
    """Title and body joined by a space, as BEIR and MTEB feed documents to a model."""
    return f"{title.strip()} {text.strip()}".strip()


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None


def _find(directory: Path, *names: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: none of {', '.join(names)} found (a BEIR dataset directory?)")


def load_qrels(path: Path) -> Qrels:
    """``query-id <tab> corpus-id <tab> score`` with a header line; CRLF line ends are fine."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline=None) as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if (number == 1 and fields[0] == "query-id") or not line.strip():
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{number}: expected 3 tab-separated fields, got {len(fields)}")
            query_id, doc_id, score = fields
            if int(score) > 0:
                qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


def load_dataset(directory: Path, split: str = "test") -> Dataset:
    """The corpus, the queries judged in ``qrels/<split>.tsv``, and those judgements.

    Raises ``ValueError`` when a judged query or document is missing from the files.
    """
    qrels = load_qrels(_find(directory, f"qrels/{split}.tsv"))
    if not qrels:
        raise ValueError(f"{directory}/qrels/{split}.tsv judges no document relevant to any query")
    corpus: dict[str, str] = {}
    for number, row in _jsonl(_find(directory, "corpus.jsonl", "corpus.jsonl.gz")):
        doc_id = str(row.get("_id", ""))
        if not doc_id:
            raise ValueError(f"corpus line {number}: no _id")
        corpus[doc_id] = document_text(str(row.get("title") or ""), str(row.get("text") or ""))
    queries: dict[str, str] = {}
    for _, row in _jsonl(_find(directory, "queries.jsonl")):
        query_id = str(row.get("_id", ""))
        if query_id in qrels:
            queries[query_id] = str(row.get("text", ""))
    missing_queries = sorted(set(qrels) - set(queries))
    if missing_queries:
        raise ValueError(f"{len(missing_queries)} judged queries are not in queries.jsonl: {missing_queries[:5]}")
    missing_docs = sorted({d for judged in qrels.values() for d in judged} - set(corpus))
    if missing_docs:
        raise ValueError(f"{len(missing_docs)} judged documents are not in the corpus: {missing_docs[:5]}")
    empty = [doc_id for doc_id, text in corpus.items() if not text] + [q for q, text in queries.items() if not text]
    if empty:
        raise ValueError(f"{len(empty)} documents or queries have no text: {empty[:5]}")
    return Dataset(directory.resolve().name, corpus, queries, qrels)
