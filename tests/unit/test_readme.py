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


def test_the_readme_links_every_part_of_the_docs() -> None:
    """Every top-level entry of mkdocs.yml's nav: the page, or for a section at least one of its pages."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def files(value: object) -> list[str]:
        if isinstance(value, list):
            return [f for item in value for f in files(next(iter(item.values())) if isinstance(item, dict) else item)]
        return [str(value)]

    unlinked = []
    for entry in nav:
        title, value = next(iter(entry.items()))
        if not any(f"(docs/{page}" in README for page in files(value)):
            unlinked.append(title)
    assert unlinked == [], "parts of the docs site the README does not link"


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
