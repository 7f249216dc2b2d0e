"""The playground page in headless Chromium against the real server with the default catalogue.

Each panel is run with real inputs and its rendered numbers are checked against the API's own
answers for the same inputs; the snippets the page shows are run and must give the same answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.browser import Watch, open_page
from helpers.server import Server
from playwright.sync_api import Browser, Page, expect

DENSE = "all-minilm-l6-v2"
SPARSE = "splade-tiny"
RERANK = "hybrid-rerank"
# two paraphrases, then two texts unrelated to them
DENSE_TEXTS = [
    "A man is playing a guitar.",
    "A person plays the guitar.",
    "The stock market fell sharply today.",
    "What causes heart attacks?",
]
QUERY = "What causes heart attacks?"
OTHER = "Heart disease is often caused by blocked arteries."
DOCUMENTS = [
    "The stock market fell sharply today.",
    "Heart attacks are usually caused by a blocked coronary artery.",
    "A man is playing a guitar.",
    "Regular exercise lowers the risk of heart disease.",
]


def _snippet(page: Page, panel: str, kind: str) -> str:
    return page.locator(f"#{panel} [data-snippet={kind}] pre").inner_text()


def _run_shell(snippet: str) -> Any:
    done = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _run_python(snippet: str) -> str:
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _dense(page: Page, texts: list[str], model: str = DENSE) -> None:
    page.fill("#dense-model", model)
    page.fill("#dense-texts", "\n".join(texts))
    page.click("#dense button[type=submit]")


def _cells(page: Page) -> dict[tuple[int, int], float]:
    page.wait_for_selector("#dense-output svg.heatmap")
    raw = page.eval_on_selector_all(
        "#dense-output g.cell", "els => els.map(e => [+e.dataset.i, +e.dataset.j, +e.dataset.value])"
    )
    return {(int(i), int(j)): float(v) for i, j, v in raw}


def _api_cosines(api: httpx.Client, texts: list[str]) -> np.ndarray:
    response = api.post("/api/v1/embeddings", json={"model": DENSE, "input": texts})
    assert response.status_code == 200, response.text
    vectors = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ vectors.T


def _sparse_api(api: httpx.Client, texts: list[str]) -> list[dict[str, Any]]:
    response = api.post(
        "/api/v1/embed_sparse", json={"model": SPARSE, "input": texts, "options": {"return_tokens": True}}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# ---- the page and the models panel ------------------------------------------------------------


def test_root_links_the_page_and_it_loads_nothing_from_outside(
    page_watch: tuple[Page, Watch], api: httpx.Client
) -> None:
    page, watch = page_watch
    assert api.get("/").json()["playground"] == "/playground"
    expect(page).to_have_title("embedserve playground")
    assert {url.rsplit("/", 1)[-1] for url in watch.requests} >= {"playground", "app.js", "style.css", "models"}
    assert not watch.outside() and not watch.errors and not watch.console


def test_models_panel_lists_the_catalogue(page: Page, api: httpx.Client, shots: Path) -> None:
    models = api.get("/api/v1/models").json()["models"]
    rows = page.locator("#models-table tbody tr[data-model]")
    expect(rows).to_have_count(len(models))
    for model in models:
        row = page.locator(f'#models-table tr[data-model="{model["id"]}"]')
        expect(row.locator("[data-field=type]")).to_have_text(model["type"])
        expect(row.locator("[data-field=engine]")).to_have_text(model["engine"])
        expect(row.locator("[data-field=state]")).to_have_text(model["state"])
        # a model with no vectors of its own (the fusion reranker) has no dimension: shown as a dash
        dimension = "\u2013" if model["dimension"] is None else str(model["dimension"])
        expect(row.locator("[data-field=dimension]")).to_have_text(dimension)
    expect(page.locator(f'tr[data-model="{RERANK}"]')).to_contain_text("not a cross-encoder", ignore_case=True)
    # the models' ids are offered in each panel, the first of the panel's type filled in
    expect(page.locator("#dense-model")).to_have_value(DENSE)
    expect(page.locator("#sparse-model")).to_have_value(SPARSE)
    expect(page.locator("#rerank-model")).to_have_value(RERANK)
    assert "requests.get(" in _snippet(page, "models", "python")
    page.locator("#models").screenshot(path=shots / "models.png")


def test_unload_and_load_from_the_models_panel(page: Page, api: httpx.Client) -> None:
    row = page.locator(f'#models-table tr[data-model="{RERANK}"]')
    try:
        row.get_by_role("button", name=f"Unload {RERANK}", exact=True).click()
        expect(row.locator("[data-field=state]")).to_have_text("unloaded")
        assert api.get(f"/api/v1/models/{RERANK}").json()["state"] == "unloaded"
        expect(page.locator("#models .request")).to_contain_text(f"POST /api/v1/models/{RERANK}/unload → 200")
        # keyboard: focus moved to the button that undoes the action
        expect(row.get_by_role("button", name=f"Load {RERANK}", exact=True)).to_be_focused()
        page.keyboard.press("Enter")
        expect(row.locator("[data-field=state]")).to_have_text("ready", timeout=60_000)
        assert api.get(f"/api/v1/models/{RERANK}").json()["state"] == "ready"
    finally:
        api.post(f"/api/v1/models/{RERANK}/load")


# ---- dense ------------------------------------------------------------------------------------


def test_dense_heatmap_matches_the_api(page: Page, api: httpx.Client, shots: Path) -> None:
    _dense(page, DENSE_TEXTS)
    cells = _cells(page)
    expected = _api_cosines(api, DENSE_TEXTS)
    n = len(DENSE_TEXTS)
    assert set(cells) == {(i, j) for i in range(n) for j in range(n)}
    for (i, j), value in cells.items():
        assert value == pytest.approx(expected[i, j], abs=1e-5)
    assert cells[0, 1] > 0.5 > cells[0, 2], "paraphrases must score above unrelated texts"
    # the nearest pair is the paraphrases, outlined both ways and named
    nearest = page.eval_on_selector_all(
        "#dense-output g.cell.nearest", "els => els.map(e => [+e.dataset.i, +e.dataset.j])"
    )
    assert sorted(map(tuple, nearest)) == [(0, 1), (1, 0)]
    expect(page.locator("[data-role=nearest]")).to_have_text(f"Nearest pair: 1 and 2, cosine {cells[0, 1]:.3f}.")
    # the value on hover, and on keyboard focus
    page.locator('#dense-output g.cell[data-i="0"][data-j="2"]').hover()
    expect(page.locator("#dense-readout")).to_contain_text(f"cosine {cells[0, 2]:.3f}")
    page.mouse.move(0, 0)
    page.locator('#dense-output g.cell[data-i="1"][data-j="3"]').focus()
    expect(page.locator("#dense-readout")).to_contain_text(f"cosine {cells[1, 3]:.3f}")
    expect(page.locator('#dense-output g.cell[data-i="0"][data-j="1"] text')).to_have_text(f"{cells[0, 1]:.2f}")
    expect(page.locator("#dense .request [data-role=latency]")).to_contain_text("POST /api/v1/embeddings → 200")
    expect(page.locator("#dense .request [data-role=latency]")).to_contain_text(" ms ")
    page.locator("#dense").screenshot(path=shots / "dense.png")

    # the snippets are the request it sent: curl gives the same vectors, the openai client runs
    served = _run_shell(_snippet(page, "dense", "curl"))
    got = np.array([d["embedding"] for d in served["data"]])
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    np.testing.assert_allclose(got @ got.T, expected, atol=1e-5)
    assert _run_python(_snippet(page, "dense", "python")).strip() == f"{n} vectors of 384 dimensions"


def test_copy_puts_the_snippet_on_the_clipboard(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _dense(page, DENSE_TEXTS[:2])
    page.locator("#dense [data-snippet=curl] button.copy").click()
    expect(page.locator("#dense [data-snippet=curl] .copied")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == _snippet(page, "dense", "curl")


# ---- sparse -----------------------------------------------------------------------------------


def test_sparse_one_text_shows_its_top_terms(page: Page, api: httpx.Client, shots: Path) -> None:
    page.fill("#sparse-a", QUERY)
    page.fill("#sparse-b", "")
    page.fill("#sparse-top", "10")
    page.click("#sparse button[type=submit]")
    page.wait_for_selector("#sparse-output svg.bars")
    (item,) = _sparse_api(api, [QUERY])
    ranked = sorted(zip(item["values"], item["tokens"], strict=True), reverse=True)[:10]
    bars = page.eval_on_selector_all(
        "#sparse-output [data-text='0'] g.bar",
        "els => els.map(e => [e.dataset.term, +e.dataset.value, e.classList.contains('own')])",
    )
    assert [term for term, _, _ in bars] == [term for _, term in ranked]
    for (_, value, _), (expected, _) in zip(bars, ranked, strict=True):
        assert value == pytest.approx(expected, abs=1e-6)
    query_words = {"what", "causes", "heart", "attacks"}
    top_term, _, own = bars[0]
    assert top_term in query_words and own, bars[0]
    assert any(not own for _, _, own in bars), "SPLADE adds terms the query does not contain"
    expect(page.locator("#sparse-output [data-role=active]")).to_have_text(str(len(item["indices"])))
    expect(page.locator("#sparse-output .overlap")).to_have_count(0)
    page.locator("#sparse").screenshot(path=shots / "sparse-one-text.png")
    out = _run_python(_snippet(page, "sparse", "python"))
    assert out.startswith(f"{len(item['indices'])} active dimensions:")


def test_sparse_two_texts_show_the_shared_terms(page: Page, api: httpx.Client, shots: Path) -> None:
    page.fill("#sparse-a", QUERY)
    page.fill("#sparse-b", OTHER)
    page.click("#sparse button[type=submit]")
    page.wait_for_selector("#sparse-output .overlap")
    a, b = _sparse_api(api, [QUERY, OTHER])
    wa = dict(zip(a["tokens"], a["values"], strict=True))
    wb = dict(zip(b["tokens"], b["values"], strict=True))
    products = sorted(((wa[t] * wb[t], t) for t in wa.keys() & wb.keys()), reverse=True)
    dot = sum(p for p, _ in products)
    expect(page.locator("#sparse-output [data-role=shared]")).to_have_text(str(len(products)))
    expect(page.locator("#sparse-output [data-role=dot]")).to_have_text(f"{dot:.3f}")
    bars = page.eval_on_selector_all(
        "#sparse-output .overlap g.bar", "els => els.map(e => [e.dataset.term, +e.dataset.value])"
    )
    assert [t for t, _ in bars] == [t for _, t in products][:30]
    assert [v for _, v in bars] == pytest.approx([p for p, _ in products][:30], abs=1e-6)
    assert "heart" in [t for t, _ in bars[:3]]
    active = page.locator("#sparse-output [data-role=active]")
    expect(active).to_have_text([str(len(a["indices"])), str(len(b["indices"]))])
    page.locator("#sparse").screenshot(path=shots / "sparse-two-texts.png")


# ---- rerank -----------------------------------------------------------------------------------


def test_rerank_order_matches_the_api(page: Page, api: httpx.Client, shots: Path) -> None:
    page.fill("#rerank-query", QUERY)
    page.fill("#rerank-docs", "\n".join(DOCUMENTS))
    page.click("#rerank button[type=submit]")
    page.wait_for_selector("#rerank-output ol.ranked")
    response = api.post("/api/v1/rerank", json={"model": RERANK, "query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    shown = page.eval_on_selector_all("#rerank-output li", "els => els.map(e => [+e.dataset.index, +e.dataset.score])")
    assert [i for i, _ in shown] == [r["index"] for r in results]
    assert [s for _, s in shown] == pytest.approx([r["relevance_score"] for r in results], abs=1e-6)
    assert shown[0][0] == 1, "the document about heart attacks comes first"
    first = page.locator("#rerank-output li").first
    expect(first).to_contain_text("was #2")
    expect(first).to_contain_text(DOCUMENTS[1])
    expect(first.locator(".num")).to_have_text(f"{results[0]['relevance_score']:.3f}")
    page.locator("#rerank").screenshot(path=shots / "rerank.png")
    served = _run_shell(_snippet(page, "rerank", "curl"))
    assert [r["index"] for r in served["results"]] == [r["index"] for r in results]
    printed = _run_python(_snippet(page, "rerank", "python")).split()
    assert [int(i) for i in printed[::2]] == [r["index"] for r in results]


def test_rerank_cohere_snippet_where_the_server_has_cohere_routes(page: Page, api: httpx.Client) -> None:
    if "/v2/rerank" not in api.get("/openapi.json").json()["paths"]:
        expect(page.locator("#rerank [data-snippet=cohere]")).to_have_count(0)
        pytest.skip("this server has no Cohere /v2/rerank route, so the page offers no cohere snippet")
    pytest.importorskip("cohere")
    page.fill("#rerank-query", QUERY)
    page.fill("#rerank-docs", "\n".join(DOCUMENTS))
    page.click("#rerank button[type=submit]")
    page.wait_for_selector("#rerank [data-snippet=cohere]")
    native = api.post("/api/v1/rerank", json={"model": RERANK, "query": QUERY, "documents": DOCUMENTS}).json()
    printed = _run_python(_snippet(page, "rerank", "cohere")).split()
    assert [int(i) for i in printed[::2]] == [r["index"] for r in native["results"]]


# ---- errors, keys, keyboard, narrow windows ---------------------------------------------------


def _api_error(api: httpx.Client, path: str, body: dict[str, Any]) -> str:
    response = api.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    return f"{response.status_code} {response.reason_phrase}: {response.json()['error']['message']}"


def test_errors_show_the_servers_message(page: Page, api: httpx.Client, shots: Path) -> None:
    _dense(page, DENSE_TEXTS[:2])
    page.wait_for_selector("#dense-output svg.heatmap")
    _dense(page, DENSE_TEXTS[:2], model="no-such-model")
    error = page.locator("#dense .error")
    expected = _api_error(
        api, "/api/v1/embeddings", {"model": "no-such-model", "input": DENSE_TEXTS[:2], "encoding_format": "float"}
    )
    expect(error).to_have_text(expected)
    assert "no-such-model" in expected and DENSE in expected  # the server lists the ids there are
    expect(page.locator("#dense .request [data-role=latency]")).to_contain_text("→ 404")
    expect(page.locator("#dense-output svg")).to_have_count(0)  # the earlier heatmap is gone
    page.locator("#dense").screenshot(path=shots / "error-unknown-model.png")

    _dense(page, [])  # an empty text box sends an empty list: the server's 422, not a blank page
    expect(error).to_have_text(
        _api_error(api, "/api/v1/embeddings", {"model": DENSE, "input": [], "encoding_format": "float"})
    )
    page.fill("#sparse-a", "")
    page.fill("#sparse-b", "")
    page.click("#sparse button[type=submit]")
    expect(page.locator("#sparse .error")).to_have_text(
        _api_error(api, "/api/v1/embed_sparse", {"model": SPARSE, "input": [""], "options": {"return_tokens": True}})
    )
    page.fill("#rerank-docs", "")
    page.click("#rerank button[type=submit]")
    expect(page.locator("#rerank .error")).to_contain_text("422")
    # a good request afterwards clears the error
    _dense(page, DENSE_TEXTS[:2])
    page.wait_for_selector("#dense-output svg.heatmap")
    expect(error).to_be_hidden()


def test_other_error_shapes_and_a_dead_server_still_give_a_message(page: Page) -> None:
    page.route(
        "**/api/v1/rerank",
        lambda route: route.fulfill(status=424, json={"error": "model said no", "error_type": "backend"}),
    )
    page.click("#rerank button[type=submit]")
    expect(page.locator("#rerank .error")).to_have_text("424 Failed Dependency: model said no")
    page.route("**/api/v1/embed_sparse", lambda route: route.fulfill(status=502, body="<html>bad gateway</html>"))
    page.click("#sparse button[type=submit]")
    expect(page.locator("#sparse .error")).to_have_text("502 Bad Gateway: <html>bad gateway</html>")
    page.route("**/api/v1/models", lambda route: route.abort())
    page.click("#models-refresh")
    expect(page.locator("#models .error")).to_contain_text("Could not reach the server")
    expect(page.locator("#dense-form")).to_be_visible()


def test_api_key_stays_in_the_tab_and_is_sent_as_bearer(page: Page) -> None:
    page.fill("#api-key", "sk-test-123")
    assert page.evaluate("sessionStorage.getItem('embedserve.apiKey')") == "sk-test-123"
    assert page.evaluate("localStorage.length") == 0
    with page.expect_request("**/api/v1/rerank") as request:
        page.click("#rerank button[type=submit]")
    assert request.value.headers["authorization"] == "Bearer sk-test-123"
    page.wait_for_selector("#rerank-output ol.ranked")
    curl = _snippet(page, "rerank", "curl")
    assert '-H "Authorization: Bearer $EMBEDSERVE_API_KEY"' in curl and "sk-test-123" not in curl
    assert "EMBEDSERVE_API_KEY" in _snippet(page, "rerank", "python")
    page.reload()
    expect(page.locator("#api-key")).to_have_value("sk-test-123")  # same tab: still there
    other = page.context.new_page()  # another tab: not there
    other.goto("/playground")
    expect(other.locator("#api-key")).to_have_value("")
    page.click("#api-key-forget")
    assert page.evaluate("sessionStorage.getItem('embedserve.apiKey')") is None


def test_every_field_has_a_label_and_the_keyboard_runs_the_panels(page: Page) -> None:
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, button')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
            .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    page.focus("#dense-texts")
    page.keyboard.press("Tab")
    expect(page.locator("#dense button[type=submit]")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_selector("#dense-output svg.heatmap")
    page.focus("#rerank-docs")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#rerank-output ol.ranked")
    page.focus("#sparse-a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#sparse-output svg.bars")


def test_narrow_window_is_readable(browser: Browser, default_server: Server, shots: Path) -> None:
    page, watch = open_page(browser, default_server, viewport={"width": 375, "height": 800})
    try:
        for panel, ready in (("dense", "svg.heatmap"), ("sparse", ".overlap"), ("rerank", "ol.ranked")):
            page.click(f"#{panel} button[type=submit]")
            page.wait_for_selector(f"#{panel}-output {ready}")
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways on a narrow window: {width}"
        page.screenshot(path=shots / "narrow.png", full_page=True)
        assert not watch.errors and not watch.outside()
    finally:
        page.context.close()


def test_whole_page_screenshot(page: Page, shots: Path) -> None:
    for panel, ready in (("dense", "svg.heatmap"), ("sparse", ".overlap"), ("rerank", "ol.ranked")):
        page.click(f"#{panel} button[type=submit]")
        page.wait_for_selector(f"#{panel}-output {ready}")
    page.screenshot(path=shots / "page.png", full_page=True)
    assert os.path.getsize(shots / "page.png") > 50_000
