"""The operator dashboard in a real headless Chromium against a real uvicorn."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from hub.assembly.context import Hub
from tests.conftest import publish_file, ticket_rows

# Debian's chromium; `make test` installs it (the `browser` target) when it is missing.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    yield pg
    context.close()


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"http://{base}/dashboard/")
    page.fill("#token", token)
    page.click("#login-form button")


def test_operator_sees_datasets_live_updates_and_queries(
    page: Page, hub: Hub, live: str, tickets_file: Path, tokens: dict[str, str], tmp_path: Path
) -> None:
    publish_file(hub, tickets_file, "tickets")
    sign_in(page, live, tokens["operator"])
    expect(page.locator("#datasets tbody tr[data-id=tickets]")).to_contain_text("12345热线工单")
    # replay from offset 0: the version published before the page opened
    expect(page.locator("#events")).to_contain_text("version 1, +50 rows")
    expect(page.locator("#conn")).to_have_class("conn on")

    pq.write_table(ticket_rows(51, 25), tickets_file.parent / "tickets-2.parquet")
    assert hub.ingest("tickets").version == 2
    expect(page.locator("#events li").first).to_contain_text("version 2, +25 rows (total 75)")
    expect(page.locator("#datasets tbody tr[data-id=tickets]")).to_contain_text("2")

    # An operator also watches the alerts channel.
    hub.bus.publish(
        "alerts", "alert.opened", {"rule_id": "aqi_high", "key": "station=GYAQ01", "status": "open"}
    )
    expect(page.locator("#events li.alert").first).to_contain_text("aqi_high station=GYAQ01 open")

    page.fill("#sql", "SELECT district_code, count(*) AS n FROM tickets GROUP BY 1 ORDER BY 1")
    page.click("#query-form button")
    expect(page.locator("#result tbody tr")).to_have_count(2)
    expect(page.locator("#query-meta")).to_contain_text("tickets v2")
    page.screenshot(path=str(tmp_path / "dashboard.png"))

    page.fill("#sql", "SELECT * FROM read_csv('/etc/passwd')")
    page.click("#query-form button")
    expect(page.locator("#query-error")).to_contain_text("not allowed")


def test_bad_token_is_refused(page: Page, live: str) -> None:
    sign_in(page, live, "bh_nope_nope")
    expect(page.locator("#login-error")).to_contain_text("token refused")
    expect(page.locator("#app")).to_be_hidden()
