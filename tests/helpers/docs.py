"""What the README and docs tests share: the served routes, the Makefile's targets, pages and their anchors."""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType

from embedserve.api import create_app
from embedserve.catalog import load_catalog
from embedserve.settings import Settings
from helpers.server import ROOT

DOCS = ROOT / "docs"


def normalize(path: str) -> str:
    """``/api/v1/models/{model_id}`` and ``/api/v1/models/{id}`` compare equal."""
    return re.sub(r"\{[^}]*\}", "{}", path)


@cache
def openapi_routes() -> frozenset[tuple[str, str]]:
    """(METHOD, path) of every operation in the app's /openapi.json, path parameters normalized."""
    app = create_app(Settings(), load_catalog(ROOT / "models.yaml", check_sources=False))
    return frozenset(
        (method.upper(), normalize(path)) for path, ops in app.openapi()["paths"].items() for method in ops
    )


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE))


def slugify(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc extension makes it (MkDocs' default)."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def heading_anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slugify(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def hook(name: str) -> ModuleType:
    """A module of docs/hooks/, imported as MkDocs does (by path)."""
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
