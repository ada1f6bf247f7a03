"""Server-side request forgery (OWASP API7): the service never fetches a URL a client gave it.

Profile `image` URLs are stored and echoed, never fetched, and token headers that name keys
(`jku`, `x5u`) are ignored (test_tokens.py). The strongest guarantee is that the service has no
HTTP client at all: this test reads every module's imports and fails on one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import Api, auth

ROOT = Path(__file__).resolve().parents[2]
HTTP_CLIENTS = {
    "requests",
    "httpx",
    "aiohttp",
    "urllib3",
    "pycurl",
    "http.client",
    "urllib.request",
    "ftplib",
    "smtplib",
}


def http_client_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found += [n for n in names if n in HTTP_CLIENTS or n.split(".")[0] in HTTP_CLIENTS]
    return found


def test_no_module_of_the_service_imports_an_http_client() -> None:
    found = {str(p.relative_to(ROOT)): http_client_imports(p.read_text()) for p in (ROOT / "service").rglob("*.py")}
    assert {path: names for path, names in found.items() if names} == {}


@pytest.mark.parametrize(
    "snippet",
    ["import requests", "from urllib.request import urlopen", "from urllib import request", "import http.client as h"],
)
def test_the_import_check_finds_http_clients(snippet: str) -> None:
    assert http_client_imports(snippet)


def test_a_profile_image_url_is_stored_and_echoed_as_text(api: Api) -> None:
    token = api.register("alice")
    internal = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    resp = api.client.put("/api/user", json={"user": {"image": internal}}, headers=auth(token))
    assert resp.status_code == 200
    assert api.client.get("/api/profiles/alice").json["profile"]["image"] == internal
