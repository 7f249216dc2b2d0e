"""Quality gate of the engines: the same models on torch, onnx, onnx-int8, openvino and openvino-int8,
through the server's HTTP API, each against torch.

* STS Benchmark test (../shared/data/stsbenchmark, bench/sts.py): cosine Spearman (x100) of the
  dense model; gate: within 0.5 points of torch's.
* SciFact test (../shared/data/scifact, BEIR): nDCG@10 (x100) of exact search over the served
  vectors, dense (cosine) and sparse (inner product); gate: within 1 point of torch's.

One server holds one catalogue model per task and engine (as bench/engines.py writes it); exports
come from the cache (``EMBEDSERVE_CACHE_DIR``). Run from the repository root::

    python bench/quality.py                                  # every engine, full SciFact (long on 2 cores)
    python bench/quality.py --engines torch,onnx-int8 --queries 100 --documents 1000 --json q.json

``--queries``/``--documents`` cut SciFact (tests/helpers/beir.py: the first judged queries, every
document judged for them, random others), which is what the slow test does to stay short.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import engines as engine_rows  # noqa: E402
import sts  # noqa: E402
from common import write_json  # noqa: E402
from eval import exact_dense, exact_sparse  # noqa: E402
from helpers.beir import write_subset  # noqa: E402
from helpers.server import running_server  # noqa: E402

from embedserve.evaluation.client import Client  # noqa: E402
from embedserve.evaluation.dataset import Dataset, load_dataset  # noqa: E402
from embedserve.evaluation.metrics import evaluate  # noqa: E402

SCIFACT = ROOT.parent / "shared/data/scifact"
STS_GATE = 0.5
NDCG_GATE = 1.0


def sts_spearman(url: str, model: str) -> float:
    pairs = sts.load_pairs()
    sentences = sts.unique_sentences(pairs)
    return sts.spearman(pairs, dict(zip(sentences, sts.embed_served(url, model, sentences), strict=True)))


def scifact_ndcg(client: Client, task: str, model: str, data: Dataset) -> float:
    """nDCG@10 (x100) of exact search over the served vectors of ``model``."""
    doc_ids, docs, queries = list(data.corpus), list(data.corpus.values()), list(data.queries.values())
    if task == "dense":
        runs = exact_dense(client.embed(model, docs), list(client.embed(model, queries)), doc_ids)
    else:
        d_vectors, q_vectors = client.embed_sparse(model, docs), client.embed_sparse(model, queries)
        dimension = client.model(model).dimension or 1 + max(int(v.indices.max(initial=0)) for v in d_vectors)
        runs = exact_sparse(d_vectors, q_vectors, doc_ids, dimension)
    return evaluate(dict(zip(data.queries, runs, strict=True)), data.qrels)["ndcg@10"]  # already x100


def measure(url: str, tasks: Sequence[str], engines: Sequence[str], data: Dataset) -> dict[str, dict[str, float]]:
    """Per engine: ``sts`` (dense), ``ndcg_dense``, ``ndcg_sparse``, as the tasks allow."""
    out: dict[str, dict[str, float]] = {}
    with Client(url, batch_size=32) as client:
        for engine in engines:
            figures: dict[str, float] = {}
            for task in tasks:
                model = engine_rows.model_id(task, engine)
                if task == "dense":
                    figures["sts"] = round(sts_spearman(url, model), 3)
                figures[f"ndcg_{task}"] = round(scifact_ndcg(client, task, model, data), 3)
                client.http.post(f"/api/v1/models/{model}/unload")  # one engine's weights in memory at a time
            out[engine] = figures
            print(f"  {engine:<14} {figures}", flush=True)
    return out


def gate(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Each engine's differences to torch and whether they pass (STS 0.5 points, nDCG@10 1 point)."""
    base = figures["torch"]
    verdicts: dict[str, dict[str, Any]] = {}
    for engine, values in figures.items():
        diffs = {key: round(value - base[key], 3) for key, value in values.items() if key in base}
        limits = {key: STS_GATE if key == "sts" else NDCG_GATE for key in diffs}
        verdicts[engine] = {"diff": diffs, "passes": all(abs(diffs[k]) <= limits[k] for k in diffs)}
    return verdicts


def run(
    tasks: Sequence[str], engines: Sequence[str], queries: int | None, documents: int | None, tmp: Path
) -> dict[str, Any]:
    if "torch" not in engines:
        engines = ["torch", *engines]
    data_dir = SCIFACT
    if queries or documents:
        data_dir = write_subset(tmp / "scifact", queries or 300, documents or 5183)
    data = load_dataset(data_dir)
    path = engine_rows.catalogue(list(tasks), list(engines), tmp / "quality.yaml", preload=False)
    with running_server(path, log_path=tmp / "embedserve-quality.log") as server:
        figures = measure(server.url, tasks, engines, data)
    return {
        "figures": figures,
        "gate": gate(figures),
        "data": {"queries": len(data.queries), "documents": len(data.corpus), "sts_pairs": len(sts.load_pairs())},
    }


def print_table(result: dict[str, Any]) -> None:
    data = result["data"]
    print(
        f"\nquality vs torch (STS Benchmark test, {data['sts_pairs']} pairs; SciFact test, {data['queries']} "
        f"queries, {data['documents']} documents). Gate: STS within {STS_GATE}, nDCG@10 within {NDCG_GATE} points"
    )
    print(f"  {'engine':<14} {'STS':>7} {'diff':>7} {'nDCG d':>7} {'diff':>7} {'nDCG s':>7} {'diff':>7}  gate")
    for engine, values in result["figures"].items():
        diff = result["gate"][engine]["diff"]
        cells = []
        for key in ("sts", "ndcg_dense", "ndcg_sparse"):
            cells += [f"{values[key]:7.2f}", f"{diff[key]:+7.2f}"] if key in values else [f"{'-':>7}", f"{'-':>7}"]
        verdict = "pass" if result["gate"][engine]["passes"] else "FAIL"
        print(f"  {engine:<14} {' '.join(cells)}  {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engines", default=",".join(engine_rows.ENGINES), help="default: all (torch always)")
    parser.add_argument("--tasks", default="dense,sparse", help="default: %(default)s")
    parser.add_argument("--queries", type=int, help="SciFact test queries kept (default: all 300)")
    parser.add_argument("--documents", type=int, help="SciFact documents kept (default: all 5,183)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    with tempfile.TemporaryDirectory(prefix="embedserve-quality-") as tmp:
        result = run(tasks, [e for e in args.engines.split(",") if e], args.queries, args.documents, Path(tmp))
    print_table(result)
    if args.json:
        write_json(args.json, result)
    return 0 if all(v["passes"] for v in result["gate"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
