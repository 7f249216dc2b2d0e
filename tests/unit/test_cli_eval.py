"""``embedserve eval`` on the command line: its errors, and that nothing else imports its extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.beir import write_subset
from helpers.server import free_port

from embedserve.cli import main


def test_missing_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--dataset", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embedserve: error: eval: ") and "qrels/test.tsv" in err and len(err.splitlines()) == 1


def test_unreachable_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = write_subset(tmp_path / "d", queries=1, documents=3)
    assert main(["eval", "--dataset", str(dataset), "--url", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embedserve: error: eval: ") and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ef-search", "50"], "--ef-search"),
        (["--candidates", "0"], "--candidates"),
        (["--rerank-top", "-1"], "--rerank-top"),
    ],
)
def test_bad_numbers_are_refused(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--dataset", ".", *flags]) == 2
    assert message in capsys.readouterr().err


def test_serve_never_imports_the_eval_extra_and_eval_never_imports_torch() -> None:
    code = (
        "import sys, embedserve.cli, embedserve.api\n"
        "assert not {'psycopg', 'matplotlib', 'tqdm', 'embedserve.evaluation'} & set(sys.modules), sys.modules\n"
        "import embedserve.evaluation.runner, embedserve.evaluation.report\n"
        "assert not {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
