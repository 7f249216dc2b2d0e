"""The quality gate (bench/quality.py) for the engines the default catalogue uses, through the real server:
STS Benchmark Spearman within 0.5 points of torch's, SciFact nDCG@10 within 1 point, dense and sparse."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers.server import ROOT


def _load(name: str) -> ModuleType:
    path = ROOT / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quality = _load("quality")
CATALOGUE = ROOT / "models.yaml"
# All 300 judged test queries; the corpus cut to their judged documents and random others up to 600
# (tests/helpers/beir.py), which keeps the run short while each query still ranks hundreds of documents.
QUERIES, DOCUMENTS = 300, 600


@pytest.mark.slow
@pytest.mark.parametrize("task", ["dense", "sparse"])
def test_default_engine_passes_the_gate(task: str, tmp_path: Path) -> None:
    engine = quality.engine_rows.default_engine(task, CATALOGUE)
    assert engine is not None, f"the default catalogue has no {task} model of bench/engines.py"
    assert engine != "torch", f"the default {task} model runs on torch: nothing to gate"
    result = quality.run([task], ["torch", engine], QUERIES, DOCUMENTS, tmp_path)
    quality.print_table(result)
    assert result["data"]["queries"] == QUERIES and result["data"]["sts_pairs"] == 1379
    torch_figures = result["figures"]["torch"]
    assert torch_figures[f"ndcg_{task}"] > 30, torch_figures  # the torch side itself is sane
    if task == "dense":
        assert torch_figures["sts"] > 80, torch_figures  # MTEB publishes 82.03 for all-MiniLM-L6-v2
    verdict = result["gate"][engine]
    assert verdict["passes"], (engine, verdict, result["figures"])
