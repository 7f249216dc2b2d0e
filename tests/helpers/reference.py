"""The reference libraries that cannot share the project's venv (pylate pins sentence-transformers
5.3 and transformers <= 5.3; FlagEmbedding goes with them), run in a venv of their own.

``make test`` creates it (``make reference-venv``: ``.venv-reference``, torch pinned first);
``EMBEDSERVE_REFERENCE_PYTHON`` points the tests at another interpreter with pylate and
FlagEmbedding installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.server import ROOT

SCRIPTS = Path(__file__).parent / "reference"


def reference_python() -> Path:
    explicit = os.environ.get("EMBEDSERVE_REFERENCE_PYTHON")
    path = Path(explicit) if explicit else ROOT / ".venv-reference" / "bin" / "python"
    if not path.exists():
        pytest.fail(
            f"no reference interpreter at {path}: create it with `make reference-venv` (pylate and FlagEmbedding "
            "beside torch, in a venv of their own) or set EMBEDSERVE_REFERENCE_PYTHON"
        )
    return path


def run_reference(script: str, request: dict[str, Any], timeout: float = 600) -> Any:
    """Run ``reference/<script>`` with ``request`` on stdin; its last line of output, parsed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(reference_python()), str(SCRIPTS / script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
