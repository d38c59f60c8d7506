"""Hardening through a real server: security headers on every HTML, asset, report and error
response (a CSP without ``unsafe-inline``, ``nosniff``, ``Referrer-Policy``, a configurable
``frame-ancestors``), and ``/docs`` served from files installed with the package."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.errors import ConfigurationError
from tests.test_api import INCIDENT, Deployment, api, deploy  # noqa: F401 - the fixture

PAGES = [
    "/",
    "/assets/viewer.js",
    "/assets/viewer.css",
    "/docs",
    "/docs/assets/swagger-ui-bundle.js",
    "/docs/assets/swagger-ui.css",
    "/assets/docs.js",
    "/openapi.json",
    "/healthz",
    "/nowhere",
]


@pytest.fixture
def embeddable(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(
        pg_settings, ApiConfig(frame_ancestors="'self'  https://intranet.example.com")
    )


def _policy(response: httpx.Response) -> dict[str, str]:
    directives = (
        d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";")
    )
    return {name: value for name, value in directives}  # noqa: C416 - pairs from split()


def _assert_hardened(response: httpx.Response, frame_ancestors: str = "'none'") -> None:
    policy = _policy(response)
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "unsafe-eval" not in response.headers["content-security-policy"]
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == frame_ancestors
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_every_page_asset_report_and_error_is_hardened(api: Deployment) -> None:  # noqa: F811
    with api.client() as client:
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == (404 if path == "/nowhere" else 200), path
            _assert_hardened(response)
        client.post("/v1/events", json=INCIDENT)
        api.projected("acme", 1)
        for path, params in [
            ("/v1/events", {}),
            ("/v1/events/export", {"format": "csv"}),
            ("/v1/events", {"limit": "0"}),
        ]:
            _assert_hardened(client.get(path, params=params))
        report = client.get("/v1/reports", params={"since": "1d"})
    assert report.status_code == 200
    _assert_hardened(report)
    # Its one inline stylesheet is allowed by its hash, and nothing else inline is.
    (style,) = re.findall(r"<style>(.*?)</style>", report.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert _policy(report)["style-src"] == f"'self' 'sha256-{digest}'"
    assert "<script" not in report.text


def test_frame_ancestors_is_configurable(embeddable: Deployment) -> None:
    with embeddable.client() as client:
        for path in ("/", "/docs", "/assets/viewer.js"):
            _assert_hardened(client.get(path), "'self' https://intranet.example.com")


@pytest.mark.parametrize("value", ["", "'none'; script-src *", "javascript:", "'unsafe-inline'"])
def test_a_frame_ancestors_that_would_change_the_policy_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="frame-ancestors"):
        ApiConfig(frame_ancestors=value)


def test_docs_work_offline_from_the_packages_files(api: Deployment) -> None:  # noqa: F811
    """Swagger UI from files installed with auditcore: the page names no other origin, and
    every file it loads is served here."""
    with api.client(None) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "<script>" not in page.text  # no inline code: the CSP allows none
        referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert referenced
        assert not [url for url in referenced if "//" in url]
        for url in referenced:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0
        bundle = client.get("/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in bundle.text
        assert "/openapi.json" in client.get("/assets/docs.js").text
        assert client.get("/redoc").status_code == 404  # FastAPI's CDN page is off
