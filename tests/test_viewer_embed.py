"""The embeddable viewer in headless Chromium: a page on another local origin (a second HTTP
server started here) frames a viewer link and sees the token's workspace narrowed by its fixed
filters, and the link's secret reaches no request but the one that exchanges it; a page on an
origin the token does not name cannot frame it. Then the viewer's accessibility (axe-core,
injected into the page) and its layout at 360 px."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.demo import run_demo
from auditcore.tenancy import Scope
from tests.test_api import Deployment, deploy
from tests.test_viewer import browser, watched

# One engine: what the page may see is decided in SQL, proven on both engines by
# test_viewer_tokens; here it is the browser's part (framing, the link's secret).
pytestmark = pytest.mark.store_only

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_viewer

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


class Host:
    """A page on its own origin (127.0.0.1 on another port) that frames ``src``."""

    def __init__(self) -> None:
        self.src = ""
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    "<!doctype html><html lang=en><title>Customer app</title>"
                    "<h1>Customer app</h1>"
                    f'<iframe title="Audit log" src="{html.escape(host.src)}" '
                    'width="1200" height="800"></iframe>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    allowed, other = Host(), Host()
    try:
        yield allowed, other
    finally:
        allowed.close()
        other.close()


@pytest.fixture
def embed_api(pg_settings: Settings) -> Iterator[Deployment]:
    for deployment in deploy(pg_settings, ApiConfig(live_keepalive=0.5)):
        deployment.keys["portal"] = deployment.directory.create_key(
            "acme", "portal", [Scope.READ, Scope.EMBED]
        ).token
        yield deployment


def _mint(api: Deployment, **body: Any) -> dict[str, Any]:
    with api.client("portal") as client:
        response = client.post("/v1/viewer-tokens", json=body)
    assert response.status_code == 201, response.text
    minted: dict[str, Any] = response.json()
    return minted


def test_another_origin_embeds_the_viewer_and_an_unlisted_one_cannot(
    browser: Browser, embed_api: Deployment, hosts: tuple[Host, Host]
) -> None:
    api = embed_api
    allowed, other = hosts
    run = run_demo(api.audit, "acme")
    api.projected("acme", len(run.events))
    actor = run.events[0].actor.id
    theirs = sum(event.actor.id == actor for event in run.events)
    assert 0 < theirs < len(run.events)

    minted = _mint(api, filters={"actor_id": actor}, origins=[allowed.origin])
    link = minted["url"].split("#", 1)[1]
    allowed.src = minted["url"]
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems = watched(page)
    requests: list[Request] = []
    # A lambda: Playwright cannot wrap a builtin method as a handler.
    page.on("request", lambda request: requests.append(request))  # noqa: PLW0108
    page.goto(allowed.origin)
    frame = page.frame_locator("iframe")
    rows = frame.locator("#events tbody tr")
    expect(rows).to_have_count(min(theirs, 50))
    expect(frame.locator("#who")).to_have_text("acme")
    actor_filter = frame.get_by_role("textbox", name="Actor")
    expect(actor_filter).to_have_value(actor)
    expect(actor_filter).not_to_be_editable()
    expect(frame.locator("#fixed")).to_contain_text(actor)
    for text in rows.all_inner_texts():
        assert f"({actor})" in text
    # The fragment left the address bar, and no request carried the secret but the exchange.
    framed = next(f for f in page.frames if "/embed/" in f.url)
    assert "#" not in framed.url
    for request in requests:
        assert link not in request.url
        assert all(link not in value for value in request.all_headers().values())
        if link in (request.post_data or ""):
            assert request.url == f"{api.url}/v1/viewer-sessions"
    assert any(r.url == f"{api.url}/v1/viewer-sessions" for r in requests)
    page.close()
    assert problems == []

    # An origin the token does not name: Chromium refuses to frame the page, and the link is
    # never exchanged.
    refused = _mint(api, filters={"actor_id": actor}, origins=[allowed.origin])
    other.src = refused["url"]
    page = browser.new_page()
    problems = watched(page)
    page.goto(other.origin)
    expect(page.locator("iframe")).to_be_attached()
    page.wait_for_timeout(1000)  # had the viewer loaded, it would have exchanged by now
    assert page.frame_locator("iframe").locator("#events").count() == 0
    assert api.directory.viewer_tokens.get(refused["id"]).exchanged_at is None
    page.close()
    assert any("frame-ancestors" in p for p in problems), problems


def test_the_viewer_is_accessible_and_fits_360_px(browser: Browser, embed_api: Deployment) -> None:
    api = embed_api
    run = run_demo(api.audit, "acme")
    api.projected("acme", len(run.events))
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci` in tests/ (bash .ci/run does)")
    for width in (1280, 360):
        minted = _mint(api)
        page = browser.new_page(viewport={"width": width, "height": 800})
        problems = watched(page)
        page.goto(minted["url"])
        expect(page.locator("#events tbody tr").first).to_be_visible()
        # Keyboard: Tab reaches a row, Enter opens it.
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.closest('#events tbody tr') !== null"):
                break
        page.keyboard.press("Enter")
        expect(page.locator("#detail")).to_be_visible()
        # Evaluated through the DevTools protocol: the page's CSP (no inline scripts) stays on.
        page.evaluate(AXE.read_text(encoding="utf-8"))
        results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        serious = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in results["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], serious
        # Nothing wider than the viewport but the table's own scroller.
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, (width, overflow)
        page.close()
        assert problems == []
    with httpx.Client(base_url=api.url) as client:
        icon = client.get("/assets/favicon.svg")
        assert icon.status_code == 200
        assert icon.headers["content-type"].startswith("image/svg+xml")


def test_the_auditors_tools(browser: Browser, embed_api: Deployment) -> None:
    """Range presets, click to filter, the view in the URL with back and forward, local time,
    columns kept per browser, export and report downloads, the chart's brush, a state tab's
    filters, and descriptions rendered as text."""
    api = embed_api
    run = run_demo(api.audit, "acme")
    with api.client("acme") as client:
        hostile = {"id": "user_mallory", "type": "user", "name": "<img src=x id=pwned>"}
        response = client.post(
            "/v1/events",
            json={
                "action": "incident.opened",
                "actor": hostile,
                "metadata": {"title": "{actor.name}", "severity": "sev3", "service": "<b>"},
            },
        )
        assert response.status_code == 201, response.text
    total = len(run.events) + 1
    api.projected("acme", total)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems = watched(page)
    page.goto(api.url)
    page.get_by_role("textbox", name="API key").fill(api.keys["acme_read"])
    page.get_by_role("button", name="Sign in").click()
    rows = page.locator("#events tbody tr")
    expect(rows).to_have_count(min(total, 50))
    expect(page.locator("#who")).to_have_text("acme")
    # Descriptions from the actions' templates, set as text: the hostile name stays text.
    expect(rows.first).to_contain_text("<img src=x id=pwned> opened sev3 incident {actor.name}")
    assert page.locator("#pwned").count() == 0
    expect(
        page.locator("td.description").filter(has_text="resolved incident").first
    ).to_be_visible()

    _click_to_filter_and_history(api, page, run.events, total)
    _range_zone_columns_and_downloads(api, page)
    _chart_and_state_tab(page)
    page.close()
    assert problems == []


def _click_to_filter_and_history(
    api: Deployment, page: Page, events: list[Any], total: int
) -> None:
    rows = page.locator("#events tbody tr")
    # Click an actor: the filter is set and the URL says so; back and forward replay it.
    page.locator("button.chip", has_text="(user_alice)").first.click()
    expect(page).to_have_url(f"{api.url}/?actor_id=user_alice")
    alices = sum(event.actor.id == "user_alice" for event in events)
    expect(rows).to_have_count(alices)
    page.go_back()
    expect(rows).to_have_count(min(total, 50))
    expect(page.get_by_role("textbox", name="Actor")).to_have_value("")
    page.go_forward()
    expect(rows).to_have_count(alices)
    page.get_by_role("button", name="Clear").click()
    expect(rows).to_have_count(min(total, 50))


def _range_zone_columns_and_downloads(api: Deployment, page: Page) -> None:
    # A preset, then local time; the shared URL opens the same view.
    page.get_by_label("Time range").select_option("1h")
    expect(page).to_have_url(f"{api.url}/?range=1h")
    page.get_by_label("Times in").select_option("local")
    expect(page.locator("#events thead")).to_contain_text("Time (local)")
    shared = page.url
    assert "zone=local" in shared

    # Columns: chosen here, kept by the browser.
    page.locator("#columns-chooser summary").click()
    page.locator("#columns").get_by_role("checkbox", name="Details", exact=True).uncheck()
    page.locator("#columns").get_by_role("checkbox", name="IP", exact=True).check()
    expect(page.locator("#events thead")).not_to_contain_text("Details")
    page.goto(shared)
    expect(page.locator("#events thead")).to_contain_text("IP")
    expect(page.locator("#events thead")).not_to_contain_text("Details")
    expect(page.get_by_label("Time range")).to_have_value("1h")

    # Export and report for the current filters, downloaded with the key.
    page.get_by_role("textbox", name="Source").fill("api")
    page.get_by_role("button", name="Apply").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    lines = exported.strip().splitlines()
    assert len(lines) > 1
    assert all(",api," in line for line in lines[1:])
    with page.expect_download() as download:
        page.get_by_role("button", name="Report").click()
    assert "Audit report: acme" in Path(download.value.path()).read_text(encoding="utf-8")


def _chart_and_state_tab(page: Page) -> None:
    # The chart: bars from /v1/stats; dragging across it sets a custom range.
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Time range").select_option("1d")
    chart = page.locator("#chart")
    expect(chart.locator("rect.bar").first).to_be_attached()
    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.99, box["y"] + 20, steps=5)
    page.mouse.up()
    expect(page.get_by_label("Time range")).to_have_value("custom")
    assert "since=" in page.url
    assert "until=" in page.url

    # A state tab with its own filters; its time columns in the same format.
    page.get_by_role("tab", name="incidents").click()
    page.locator("#state-filters").get_by_label("status").fill("resolved")
    page.locator("#state-filters").get_by_role("button", name="Apply").click()
    expect(page.locator("#state tbody tr")).to_have_count(1)
    expect(page.locator("#state tbody tr").first).to_contain_text("resolved")
    assert "tab=incidents" in page.url
