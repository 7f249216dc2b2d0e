"""The README's request per dialect, run as written (the host swapped for the test server's)."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys

import httpx
import pytest
from helpers.server import ROOT, Server

README = (ROOT / "README.md").read_text(encoding="utf-8")
HOST = "http://127.0.0.1:7860"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.MULTILINE | re.DOTALL)


def _curls() -> list[str]:
    """Each bash block that is one curl command (its quoted JSON may span lines)."""
    commands = [block.replace("\\\n", " ").strip() for block in _blocks("bash")]
    return [command for command in commands if command.startswith("curl ")]


def test_the_readme_has_examples_to_run() -> None:
    assert len(_curls()) >= 3 and len(_blocks("python")) >= 2


@pytest.mark.parametrize("command", _curls(), ids=lambda c: c.split()[2])
def test_readme_curl_examples_answer(command: str, default_server: Server) -> None:
    args = shlex.split(command)
    url = next(a for a in args if a.startswith(HOST)).replace(HOST, default_server.url)
    headers = dict(h.split(": ", 1) for flag, h in itertools.pairwise(args) if flag == "-H")
    body = next(d for flag, d in itertools.pairwise(args) if flag == "-d")
    response = httpx.post(url, headers=headers, content=body.encode(), timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_examples_run(index: int, default_server: Server) -> None:
    """Each Python block in a fresh interpreter, as a reader would paste it."""
    code = _blocks("python")[index].replace(HOST, default_server.url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
