"""schemathesis against the server's own /openapi.json, every operation: generated requests (valid
and not) must never get a 5xx, and every response must match its documented status, content
type and schema. A real server process with tiny models; a bounded, derandomized run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from helpers.server import ROOT, Server, running_server
from hypothesis import HealthCheck, given, settings, strategies
from robustness.conftest import SERVER_ENV, write_catalog
from robustness.support import AUTH, count, record
from schemathesis import GenerationMode, checks

from embedserve.api import create_app
from embedserve.catalog import load_catalog
from embedserve.settings import Settings

MAX_EXAMPLES = int(os.environ.get("EMBEDSERVE_SCHEMATHESIS_EXAMPLES", "50"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def st_server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    catalog = write_catalog(root / "models.yaml", tiny_models)
    with running_server(catalog, env=SERVER_ENV, log_path=root / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(st_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{st_server.url}/openapi.json")


def _operations() -> list[tuple[str, str]]:
    """The schema's operations, from the app built in-process (no model loads), for the test ids."""
    app = create_app(Settings(), load_catalog(ROOT / "models.yaml", check_sources=False))
    return sorted((m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops)


@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: str(v))
def test_every_operation_conforms(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]
    seen: list[int] = []

    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

    @given(case=strategies.one_of(*(operation.as_strategy(mode) for mode in modes)))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if path.endswith("/unload") and str(case.path_parameters.get("model_id", "")).startswith("tiny-"):
            case.path_parameters["model_id"] = "no-such-model"  # keep the models loaded for the other examples
        response = case.call(headers=AUTH, timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    finally:
        count(seen, "schemathesis")
        record("schemathesis_operations", 1)
        for status in seen:
            record(f"schemathesis_status.{status}", 1)
