"""The README's route table and /openapi.json list the same routes."""

from __future__ import annotations

import re

from helpers.server import ROOT

from embedserve.api import create_app
from embedserve.catalog import load_catalog
from embedserve.settings import Settings

# FastAPI serves these outside the schema; the playground's static page is left out of it on purpose
NOT_IN_SCHEMA = {("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/playground")}


def _normalize(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def _readme_routes() -> set[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## API\n") :]
    table = section[: section.index("\n### ")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    routes = {(m, _normalize(p)) for row in rows for m, p in re.findall(r"`(GET|POST|PUT|DELETE) (/[^`]*)`", row)}
    assert routes, "no route table found under '## API'"
    return routes


def test_readme_route_table_matches_openapi() -> None:
    app = create_app(Settings(), load_catalog(ROOT / "models.yaml", check_sources=False))
    schema = {(method.upper(), _normalize(path)) for path, ops in app.openapi()["paths"].items() for method in ops}
    readme = _readme_routes() - NOT_IN_SCHEMA
    assert sorted(schema - readme) == [], "in /openapi.json but not in the README's route table"
    assert sorted(readme - schema) == [], "in the README's route table but not in /openapi.json"
