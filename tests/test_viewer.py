"""The web viewer in headless Chromium (Debian's, driven by Playwright): sign in, filter,
open an event, go live, and see an event recorded through the API appear."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.demo import run_demo
from tests.test_api import Deployment, deploy

CHROMIUM = "/usr/bin/chromium"
# Set AUDITCORE_SCREENSHOTS=1 to refresh the README's screenshots from these tests.
SCREENSHOT = Path(__file__).parent / "screenshots" / "viewer.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def watched(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of ``page``: a script or stylesheet that the
    Content-Security-Policy blocks shows up here ("Refused to …")."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


def csp_violations(problems: list[str]) -> list[str]:
    return [p for p in problems if "Content Security Policy" in p or "Refused to" in p]


@pytest.fixture
def viewer_api(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(pg_settings, ApiConfig(live_keepalive=0.5))


def test_sign_in_filter_open_and_go_live(browser: Browser, viewer_api: Deployment) -> None:
    api = viewer_api
    run = run_demo(api.audit, "acme")
    expected = len(run.events)
    api.projected("acme", expected)
    page: Page = browser.new_page(viewport={"width": 1440, "height": 900})
    problems = watched(page)

    page.goto(api.url)
    page.get_by_role("textbox", name="API key").fill("ack_000000000000_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")

    page.get_by_role("textbox", name="API key").fill(api.keys["acme_read"])
    page.get_by_role("button", name="Sign in").click()
    rows = page.locator("#events tbody tr")
    expect(rows).to_have_count(min(expected, 50))

    page.get_by_label("Action prefix").fill("incident.")
    page.get_by_role("button", name="Apply").click()
    incident_events = sum(e.action.startswith("incident.") for e in run.events)
    expect(rows).to_have_count(incident_events)
    for action in rows.locator("td:nth-child(2)").all_inner_texts():
        assert action.startswith("incident.")

    rows.first.click()
    detail = page.get_by_role("complementary", name="Event detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-json")).to_contain_text('"event_id"')
    # Its stream's history, from version 1, with the opened event marked.
    expect(page.locator("#detail-history li").first).to_contain_text("v1 ")
    expect(page.locator("#detail-history li.current")).to_have_count(1)

    page.get_by_label("Live").check()
    expect(page.get_by_role("status")).to_contain_text("Live")
    with api.client("acme") as client:
        response = client.post(
            "/v1/events",
            json={
                "action": "incident.opened",
                "actor": {"id": "user_carol", "type": "user", "name": "Carol Diaz"},
                "metadata": {"title": "Checkout errors", "severity": "sev2", "service": "shop"},
            },
        )
        assert response.status_code == 201
    newest = page.locator("#events tbody tr.new")
    expect(newest).to_have_count(1)
    expect(newest.first).to_contain_text("Carol Diaz")
    expect(rows.first).to_contain_text("Checkout errors")

    if os.environ.get("AUDITCORE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=False)

    _the_writing_key_is_shown_and_filters(api, page, newest)
    page.close()
    # Everything ran under the server's CSP (no inline code): nothing was refused.
    assert csp_violations(problems) == []


def _the_writing_key_is_shown_and_filters(api: Deployment, page: Page, newest: Locator) -> None:
    """The key that wrote an event through the API: beside the actor, in the detail, as a
    filter."""
    rows = page.locator("#events tbody tr")
    writer = api.directory.authenticate(api.keys["acme"])
    assert writer is not None
    expect(newest.first).to_contain_text(f"Carol Diaz (user_carol) via {writer.key_id}")
    newest.first.click()
    expect(page.locator("#detail-writer")).to_contain_text(writer.key_id)
    page.get_by_label("Live").uncheck()
    # The live tail shows an event before the read model holds it (later through a server).
    api.projected("acme", 1, api_key_id=writer.key_id)
    page.get_by_label("Action prefix").fill("")
    page.get_by_label("Written by key").fill(writer.key_id)
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Checkout errors")


def test_report_renders_in_the_browser(browser: Browser, viewer_api: Deployment) -> None:
    api = viewer_api
    run = run_demo(api.audit, "acme")
    api.projected("acme", len(run.events))
    page = browser.new_page(viewport={"width": 1100, "height": 1500})
    problems = watched(page)
    page.set_extra_http_headers({"Authorization": f"Bearer {api.keys['acme_read']}"})
    page.goto(f"{api.url}/v1/reports?since=6h")
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit report: acme")
    expect(page.locator("#total-events")).to_have_text(str(len(run.events)))
    assert page.locator("svg rect").count() > 0
    expect(page.get_by_role("table").nth(3)).to_contain_text("Public API returning 503")
    if os.environ.get("AUDITCORE_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOT.with_name("report.png")), full_page=False)
    # Its inline stylesheet applied (allowed by its hash), nothing refused.
    assert page.locator(".figures").evaluate("e => getComputedStyle(e).display") == "grid"
    page.close()
    assert csp_violations(problems) == []


def test_docs_render_offline_under_the_csp(browser: Browser, viewer_api: Deployment) -> None:
    """Swagger UI from the package's files: the operations list appears, every request the
    page makes stays on this server, and the CSP refuses nothing."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watched(page)
    origins: set[str] = set()
    page.on("request", lambda request: origins.add(request.url.split("/")[2]))
    page.goto(f"{viewer_api.url}/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    expect(page.get_by_text("/v1/events/export")).to_be_visible()
    page.close()
    assert origins == {viewer_api.url.split("/")[2]}
    assert csp_violations(problems) == []
