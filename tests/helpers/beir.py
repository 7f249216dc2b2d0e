"""A small BEIR dataset cut from SciFact (../shared/data/scifact), for tests of ``embedserve eval``."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from helpers.server import ROOT

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def write_subset(destination: Path, queries: int, documents: int, source: Path = SCIFACT, seed: int = 0) -> Path:
    """The first ``queries`` judged test queries, every document judged for them, and other
    documents drawn at random (``seed``) up to ``documents`` in all; BEIR layout, gzipped corpus."""
    lines = (source / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:] if line.strip()]
    kept_queries = list(dict.fromkeys(row[0] for row in rows))[:queries]
    kept_rows = [row for row in rows if row[0] in kept_queries]
    judged = {row[1] for row in kept_rows}
    with gzip.open(source / "corpus.jsonl.gz", "rt", encoding="utf-8") as corpus:
        all_docs = [json.loads(line) for line in corpus]
    others = [doc for doc in all_docs if doc["_id"] not in judged]
    extra = random.Random(seed).sample(others, max(0, documents - len(judged)))
    chosen = {doc["_id"] for doc in extra} | judged
    (destination / "qrels").mkdir(parents=True, exist_ok=True)
    (destination / "qrels" / "test.tsv").write_text("\n".join([header, *("\t".join(r) for r in kept_rows)]) + "\n")
    with gzip.open(destination / "corpus.jsonl.gz", "wt", encoding="utf-8") as out:
        for doc in all_docs:
            if doc["_id"] in chosen:
                out.write(json.dumps(doc) + "\n")
    with (source / "queries.jsonl").open(encoding="utf-8") as src, (destination / "queries.jsonl").open("w") as out:
        for line in src:
            if json.loads(line)["_id"] in kept_queries:
                out.write(line)
    return destination
