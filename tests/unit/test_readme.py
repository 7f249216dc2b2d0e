"""The README is a short front door whose links, routes, models and commands all exist."""

from __future__ import annotations

import re

import yaml
from helpers.docs import heading_anchors, makefile_targets, openapi_routes
from helpers.server import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
# served by FastAPI outside the schema, or left out of it on purpose (the playground's static page)
NOT_IN_SCHEMA = {"/docs", "/openapi.json", "/playground"}


def test_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) < 250, "the README is the front door: reference material goes in docs/"


def test_every_link_in_the_readme_resolves() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links no docs page"
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links {link}, which does not exist"
        if anchor:
            assert anchor in heading_anchors(target), f"README links {link}: no such heading in {path}"


def test_the_readme_links_every_docs_page_of_the_nav() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    pages: list[str] = []

    def walk(items: list[object]) -> None:
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                walk(value)
            else:
                pages.append(str(value))

    walk(nav)
    # the dialect pages are reached through the API overview, linked from the README
    top = [p for p in pages if not p.startswith("api/") or p == "api/index.md"]
    missing = [p for p in top if f"(docs/{p}" not in README]
    assert missing == [], "docs pages in mkdocs.yml's nav that the README does not link"


def test_routes_named_in_the_readme_exist() -> None:
    paths = set(re.findall(r"`(?:(?:GET|POST) )?(/[a-z0-9_/{}.]*)`", README))
    paths |= {m for m in re.findall(r"http://127\.0\.0\.1:7860(/[^\s'\"]*)", README) if m not in ("/v1",)}
    assert "/v1/embeddings" in paths and "/embed_sparse" in paths
    served = {path for _, path in openapi_routes()} | NOT_IN_SCHEMA
    assert sorted(paths - served) == [], "routes the README names that the server does not serve"


def test_models_and_make_targets_named_in_the_readme_exist() -> None:
    catalogue = yaml.safe_load((ROOT / "models.yaml").read_text(encoding="utf-8"))["models"]
    named = set(re.findall(r'"model": "([^"]+)"|model="([^"]+)"|X-Model: ([\w.-]+)', README))
    models = {m for group in named for m in group if m}
    assert models and sorted(models - set(catalogue)) == []
    targets = set(re.findall(r"\bmake ([a-z-]+)", README))
    assert {"run", "test"} <= targets and sorted(targets - makefile_targets()) == []
