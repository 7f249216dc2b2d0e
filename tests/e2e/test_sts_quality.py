"""STS Benchmark through the real server: same quality as the model in-process (bench/sts.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers.server import ROOT, Server


def _load_bench() -> ModuleType:
    path = ROOT / "bench" / "sts.py"
    spec = importlib.util.spec_from_file_location("bench_sts", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sts = _load_bench()


@pytest.mark.slow
def test_sts_benchmark_served_matches_inprocess(default_server: Server) -> None:
    data: Path = sts.DEFAULT_DATA  # ../shared/data: missing data is a failure, not a skip
    result = sts.run(default_server.url, "all-minilm-l6-v2", data)
    print()
    print(sts.format_table(result))

    assert result["pairs"] == 1379
    assert abs(result["served_spearman"] - result["inprocess_spearman"]) <= 0.5, result
    assert result["served_spearman"] > 75, result  # MTEB publishes 82.03 for all-MiniLM-L6-v2
