"""The playground's multi-vector panel in headless Chromium, against a real server whose catalogue
holds a tiny ColBERT: the MaxSim alignment it draws is the API's, token by token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.browser import open_page
from helpers.server import Server, running_server
from playwright.sync_api import Browser, Page, expect

QUERY = "what pumps blood?"
DOCUMENT = "The heart pumps blood, all day long!"


@pytest.fixture(scope="module")
def colbert_server(tiny_colbert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("multi-vector-catalogue") / "models.yaml"
    models = {"tiny-colbert": {"name": str(tiny_colbert), "type": "multi-vector", "device": "cpu"}}
    config.write_text(yaml.safe_dump({"models": models}))
    with running_server(config) as server:
        yield server
    assert server.process.poll() is not None, "the server outlived its tests"


@pytest.fixture
def page(browser: Browser, colbert_server: Server) -> Iterator[Page]:
    page, watch = open_page(browser, colbert_server)
    yield page
    page.context.close()
    assert not watch.outside(), f"the page fetched from outside the server: {watch.outside()}"
    assert not watch.errors, f"uncaught script errors: {watch.errors}"


def test_alignment_shows_each_query_tokens_match(page: Page, colbert_server: Server, shots: Path) -> None:
    expect(page.locator("#multi-model")).to_have_value("tiny-colbert")
    page.fill("#multi-query", QUERY)
    page.fill("#multi-document", DOCUMENT)
    page.click("#multi button[type=submit]")
    page.wait_for_selector("#multi-output table.alignment")
    with httpx.Client(base_url=colbert_server.url, timeout=60) as api:
        response = api.post(
            "/api/v1/multi_vector/align", json={"model": "tiny-colbert", "query": QUERY, "document": DOCUMENT}
        )
    assert response.status_code == 200, response.text
    expected = response.json()

    rows = page.eval_on_selector_all(
        "#multi-output tr.match", "els => els.map(e => [+e.dataset.q, +e.dataset.d, +e.dataset.sim])"
    )
    assert [(q, d) for q, d, _ in rows] == [(m["query_index"], m["document_index"]) for m in expected["matches"]]
    for (_, _, sim), match in zip(rows, expected["matches"], strict=True):
        assert sim == pytest.approx(match["similarity"], abs=1e-6)
    first = page.locator("#multi-output tr.match").first
    expect(first.locator(".qtok")).to_have_text(expected["query_tokens"][0])
    expect(first.locator(".dtok")).to_contain_text(
        expected["document_tokens"][expected["matches"][0]["document_index"]]
    )
    expect(page.locator("#multi-output [data-role=score]")).to_contain_text(f"MaxSim score {expected['score']:.3f}")
    doc_tokens = page.locator("#multi-output .doc-tokens .tok")
    expect(doc_tokens).to_have_count(len(expected["document_tokens"]))
    matched = sorted({m["document_index"] for m in expected["matches"]})
    marked = page.eval_on_selector_all("#multi-output .doc-tokens .tok.matched", "els => els.map(e => +e.dataset.j)")
    assert marked == matched

    # focusing a row marks the document token it matched
    target = expected["matches"][1]["document_index"]
    page.locator("#multi-output tr.match").nth(1).focus()
    expect(page.locator(f'#multi-output .doc-tokens [data-j="{target}"]')).to_have_class("tok matched hl")
    expect(page.locator("#multi .request")).to_contain_text("POST /api/v1/multi_vector/align → 200")
    page.locator("#multi").screenshot(path=shots / "multi-vector.png")


def test_a_model_of_another_type_is_an_error_naming_it(page: Page) -> None:
    page.fill("#multi-model", "no-such-model")
    page.click("#multi button[type=submit]")
    expect(page.locator("#multi .error")).to_contain_text("no-such-model")
    expect(page.locator("#multi-output table")).to_have_count(0)
