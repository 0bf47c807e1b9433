"""The console in Debian's Chromium, headless, driven by Playwright: an operator finds an order whose delivery
was dead-lettered, opens its transaction, then the dead letter, edits the payload and retries it on the
current routes, and sees the order delivered through both systems — the edit audited with before and after.

With ``IRONBUS_CONSOLE_SCREENSHOTS=1`` the test also writes the screenshots of docs/console.md (docs/img/).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import OPERATOR_TOKEN, READONLY_TOKEN, ConsoleBus
from tests.helpers.services import skip_or_fail
from tests.helpers.wait import wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"Debian's chromium is not installed at {CHROMIUM} (scripts/deps/chromium.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright (Python) is not installed; pip install -e '.[dev]'")
    with sync_playwright() as p:
        # Debian's browser, never one Playwright downloads
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _shot(page: Any, name: str) -> None:
    if os.environ.get("IRONBUS_CONSOLE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=False)


def _login(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/search")
    assert page.url.endswith("/console/login"), "an anonymous visitor is sent to the login page"
    page.fill("input[name=secret]", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/search$"))


def test_search_transaction_dead_letter_retry_delivered(browser: Any, console_bus: ConsoleBus) -> None:
    bus, sink = console_bus, console_bus.sink
    sink.mode = "permanent"  # the SCM refuses the order: its delivery is dead-lettered
    event_id = bus.ingest_order("SO-4711", qty="3,5")
    bus.ingest_order("SO-4712")
    assert bus.runtime.wait_idle(timeout=30)
    sink.mode = "ok"  # the SCM is fixed; the operator now re-drives the order

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    _login(page, bus.url, OPERATOR_TOKEN)

    # Search by business key
    page.fill("input[name=key]", "SO-4711")
    page.click("form.filters button[type=submit]")
    # a locator wait, not wait_for_function: a predicate string is eval'd in the page, which the console's
    # Content-Security-Policy (script-src 'self') refuses once Playwright has to poll for it
    from playwright.sync_api import expect

    expect(page.locator("table.events tbody tr a.tx-link")).to_have_count(1)
    assert "dead" in page.inner_text("table.events tbody")
    _shot(page, "search")

    # Transaction: the trace of the order, its failed attempt with the SCM's answer
    page.click("table.events a.tx-link")
    page.wait_for_url(re.compile(f".*/console/tx/{event_id}$"))
    text = page.inner_text("main")
    assert "demand → scm.update_demand" in text and "HTTP 400" in text
    assert re.fullmatch(r"[0-9a-f]{32}", page.inner_text("#trace-id"))
    _shot(page, "transaction")

    # Dead letter: the original payload and the reason
    page.click("a.dlq-link")
    page.wait_for_url(re.compile(r".*/console/dlq/\d+$"))
    assert '"qty": "3,5"' in page.inner_text("#payload")
    assert "HTTP 400" in page.inner_text("#reason")
    _shot(page, "dead-letter")

    # Edit the payload and retry on the current routes
    edited = page.input_value("#edit-data").replace('"3,5"', '"4,5"')
    page.fill("#edit-data", edited)
    page.click("#edit-retry")
    page.wait_for_selector("p.message")
    assert "re-queued 1" in page.inner_text("p.message")
    assert "dead_letter.edit" in page.inner_text("main") and "token:operator" in page.inner_text("main")

    # Delivered: through the SCM and, by the follow-up, to the SRM, with the edited quantity
    wait_until(lambda: len(sink.delivered) >= 2, timeout=30, what="the re-driven order at both systems")
    scm = next(body for body in sink.bodies.values() if body.get("order_id") == "SO-4711")
    assert scm["quantity"] == 4.5
    page.goto(f"{bus.url}/tx/{event_id}")
    wait_until(lambda: _delivered_twice(page, bus.url, event_id), timeout=20, what="the transaction delivered")
    assert "procurement → srm.create_po" in page.inner_text("main")
    _shot(page, "delivered")

    for view in ("dlq", "routes", "systems", "queue", "masterdata", "audit"):
        page.goto(f"{bus.url}/{view}")
        assert page.locator("h1").count() == 1
        _shot(page, view)
    assert "dead_letter.retry" in page.inner_text("main")
    context.close()


def _delivered_twice(page: Any, url: str, event_id: str) -> bool:
    page.goto(f"{url}/tx/{event_id}")
    return page.locator(".delivery .status.delivered").count() >= 2


def test_read_only_sees_but_cannot_act(browser: Any, console_bus: ConsoleBus) -> None:
    bus = console_bus
    bus.sink.mode = "permanent"
    bus.ingest_order("SO-9")
    assert bus.runtime.wait_idle(timeout=30)
    context = browser.new_context()
    page = context.new_page()
    _login(page, bus.url, READONLY_TOKEN)
    page.goto(f"{bus.url}/dlq")
    assert page.locator("a.dlq-link").count() == 1
    assert page.locator("#retry-selected").count() == 0, "no action buttons for a read-only user"
    page.click("a.dlq-link")
    assert page.locator("#retry-one").count() == 0 and page.locator("#edit-data").count() == 0
    context.close()
