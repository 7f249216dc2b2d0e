"""Every model family, the ColBERT engine and BGE-M3 on torch on an NVIDIA GPU, against the same
models on the CPU: two servers from one catalogue, one with ``device: cuda`` and one with
``device: cpu``, asked the same requests.

The models are the tiny random ones the tests build (``tests/helpers/family_models.py`` and
``tests/helpers/tiny_multi_vector.py``): shapes, not meaning. A family passes when the GPU's
outputs equal the CPU's (dense and multi-vector: least cosine >= 0.9999; sparse weights and rerank
scores within 1e-4), and a half-precision copy (``dtype: float16``) stays within 1e-2.
Needs CUDA (exits with 2 otherwise).

    python bench/gpu_families.py [--json bench/results/gpu_families.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from common import write_json  # noqa: E402

# Every request computed by the model (the loads resend the same texts; bench/cache.py measures the cache).
os.environ.setdefault("EMBEDSERVE_CACHE_BYTES", "0")

TEXTS = [
    "a",
    "heart attack",
    "What causes a heart attack? Blocked arteries starve the heart muscle of oxygen " * 2,
    "b c d",
]
QUERY = "what is a heart attack"
ROUTES = {
    "embeddings": "/v1/embeddings",
    "sparse-embeddings": "/api/v1/embed_sparse",
    "rerank": "/api/v1/rerank",
    "multi-vector": "/v1/multi-vector",
}


def models(root: Path, only: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Catalogue entries (without device) of every tiny family model, the ColBERT and BGE-M3
    (``only``: the names that start with one of these)."""
    from helpers.family_models import BUILDERS
    from helpers.tiny_multi_vector import build_tiny_colbert, build_tiny_m3

    def wanted(name: str) -> bool:
        return not only or name.startswith(only)

    out: dict[str, dict[str, Any]] = {}
    for name, build in BUILDERS.items():
        if wanted(name):
            with contextlib.suppress(ImportError):  # model2vec, when not installed
                model = build(root)
                out[name] = {"name": str(model.path), "type": model.type, **model.catalogue}
    if wanted("colbert"):
        out["colbert"] = {"name": str(build_tiny_colbert(root / "colbert")), "type": "multi-vector"}
    if wanted("m3"):
        m3 = str(build_tiny_m3(root / "m3"))
        for kind in ("embeddings", "sparse-embeddings", "multi-vector"):
            out[f"m3-{kind}"] = {"name": m3, "type": kind, "engine": "bge-m3"}
    return out


def catalogue(entries: dict[str, dict[str, Any]], path: Path, device: str) -> Path:
    import yaml

    data: dict[str, Any] = {}
    for name, entry in entries.items():
        data[name] = {**entry, "device": device}
        static = name.startswith("dense-static") or name.startswith("dense-model2vec")
        if device == "cuda" and not static and not name.startswith("m3"):
            data[f"{name}-fp16"] = {**entry, "device": device, "dtype": "float16"}
    path.write_text(yaml.safe_dump({"models": data}))
    return path


def ask(url: str, model: str, kind: str) -> np.ndarray | list[np.ndarray]:
    """The model's outputs for TEXTS: rows (dense, sparse as dense rows), scores, or token matrices."""
    import httpx

    body: dict[str, Any] = {"model": model, "input": TEXTS}
    if kind == "rerank":
        body = {"model": model, "query": QUERY, "documents": TEXTS}
    response = httpx.post(url + ROUTES[kind], json=body, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"{model}: {response.status_code} {response.text[:300]}")
    answer = response.json()
    if kind == "rerank":
        scores = np.zeros(len(TEXTS), dtype=np.float32)
        for item in answer["results"]:
            scores[item["index"]] = item["relevance_score"]
        return scores
    if kind == "multi-vector":
        return [np.asarray(item["embeddings"], dtype=np.float32) for item in answer["data"]]
    if kind == "sparse-embeddings":
        width = 1 + max((max(i["indices"], default=0) for i in answer["data"]), default=0)
        rows = np.zeros((len(TEXTS), width), dtype=np.float32)
        for item in answer["data"]:
            rows[item["index"], item["indices"]] = item["values"]
        return rows
    return np.asarray([item["embedding"] for item in answer["data"]], dtype=np.float32)


def _least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float((a * b).sum(axis=-1).min())


def compare(gpu: Any, cpu: Any, kind: str) -> dict[str, float]:
    if kind == "multi-vector":
        assert [m.shape for m in gpu] == [m.shape for m in cpu], "token counts differ"
        return {"least_cosine": min(_least_cosine(g, c) for g, c in zip(gpu, cpu, strict=True))}
    if kind in ("rerank", "sparse-embeddings"):
        width = max(gpu.shape[-1], cpu.shape[-1]) if gpu.ndim == 2 else 0
        if width:
            gpu = np.pad(gpu, ((0, 0), (0, width - gpu.shape[1])))
            cpu = np.pad(cpu, ((0, 0), (0, width - cpu.shape[1])))
        return {"max_abs": float(np.abs(gpu - cpu).max())}
    return {"least_cosine": _least_cosine(gpu, cpu)}


def passed(figures: dict[str, float], half: bool) -> bool:
    if "least_cosine" in figures:
        return figures["least_cosine"] >= (0.99 if half else 0.9999)
    return figures["max_abs"] <= (1e-2 if half else 1e-4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/gpu_families.json")
    parser.add_argument("--only", default="", help="comma-separated prefixes of the model names to check")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (the CPU against itself)")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this check needs an NVIDIA GPU", file=sys.stderr)
        return 2
    from helpers.server import running_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        entries = models(Path(tmp), tuple(p for p in args.only.split(",") if p))
        gpu_config = catalogue(entries, Path(tmp) / "gpu.yaml", args.device)
        cpu_config = catalogue(entries, Path(tmp) / "cpu.yaml", "cpu")
        with running_server(gpu_config, timeout=900) as gpu, running_server(cpu_config, timeout=900) as cpu:
            for name, entry in entries.items():
                kind = entry["type"]
                reference = ask(cpu.url, name, kind)
                for model, half in ((name, False), (f"{name}-fp16", True)):
                    if model not in ask_names(gpu.url):
                        continue
                    try:
                        figures = compare(ask(gpu.url, model, kind), reference, kind)
                        rows.append({"model": model, "type": kind, **figures, "passed": passed(figures, half)})
                    except Exception as exc:  # one line per failing model; the others still run
                        rows.append({"model": model, "type": kind, "error": str(exc)[:300], "passed": False})
                    print(rows[-1], flush=True)
    report = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "rows": rows,
    }
    write_json(args.json, report)
    failed = [r["model"] for r in rows if not r["passed"]]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


_NAMES: dict[str, set[str]] = {}


def ask_names(url: str) -> set[str]:
    """The catalogue's model ids on the server at ``url``."""
    import httpx

    if url not in _NAMES:
        _NAMES[url] = {m["id"] for m in httpx.get(url + "/api/v1/models", timeout=30).json()["models"]}
    return _NAMES[url]


if __name__ == "__main__":
    raise SystemExit(main())
