"""Every route of /openapi.json (and the pages outside it) with no key, a wrong key and the right
key, in both header forms: 401 in the route's dialect without the right key, never with it."""

from __future__ import annotations

import re

import httpx
from helpers.server import Server
from robustness.support import KEY, count, record

PUBLIC = {("GET", p) for p in ("/", "/docs", "/openapi.json", "/playground", "/health", "/ready", "/metrics")}
TEI = {"/embed", "/embed_sparse", "/rerank", "/similarity", "/tokenize", "/decode", "/info"}
COHERE = {"/v1/rerank", "/v2/rerank", "/v1/embed", "/v2/embed"}
HEADERS = {
    "none": {},
    "wrong-bearer": {"Authorization": "Bearer not-the-key"},
    "wrong-x-api-key": {"x-api-key": "not-the-key"},
    "key-without-scheme": {"Authorization": KEY},
    "right-bearer": {"Authorization": f"Bearer {KEY}"},
    "right-x-api-key": {"x-api-key": KEY},
}


def routes(server: Server) -> list[tuple[str, str]]:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    found = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    return sorted(found | {("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/playground")})


def dialect(method: str, path: str) -> str:
    if path in TEI or (method, path) == ("POST", "/"):
        return "tei"
    return "cohere" if path in COHERE else "openai"


def test_every_route_with_every_key(robust_server: Server) -> None:
    table = routes(robust_server)
    assert len(table) >= 25, table
    statuses = []
    with httpx.Client(base_url=robust_server.url, timeout=30) as client:
        for method, template in table:
            path = re.sub(r"\{[^}]+\}", "no-such-model", template)
            for name, headers in HEADERS.items():
                body = b"{}" if method == "POST" else None
                response = client.request(
                    method, path, content=body, headers={**headers, "content-type": "application/json"}
                )
                statuses.append(response.status_code)
                where = f"{method} {template} with {name}"
                if (method, template) in PUBLIC or name.startswith("right"):
                    assert response.status_code != 401, where
                    continue
                assert response.status_code == 401, f"{where}: {response.status_code} {response.text[:200]}"
                error = response.json()
                kind = dialect(method, template)
                if kind == "tei":
                    assert error["error_type"] == "Unauthorized", where
                elif kind == "cohere":
                    assert set(error) == {"message"}, where
                else:
                    assert error["error"]["code"] == "invalid_api_key", where
                assert "not-the-key" not in response.text and KEY not in response.text
    count(statuses, "auth", frozenset({503}))  # /ready: the broken model
    record("auth_routes_checked", len(table))
    assert all(s < 500 or s == 503 for s in statuses)  # 503: /ready with the broken model
    log = robust_server.log()
    assert KEY not in log and "not-the-key" not in log, "an API key reached the server log"
