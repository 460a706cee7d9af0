"""The program pages in a real browser (Debian's Chromium through Playwright), on both storage adapters
(docs/console.md#programs): create, edit with a refused setting, upload a 10,000-code file, the charts, delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.console.helpers import seed
from tests.console.test_browser import Site, browser, context, page, sign_in, site

pytestmark = pytest.mark.slow
__all__ = ["browser", "context", "page", "site"]  # the fixtures, shared with test_browser.py


def test_create_a_program(page: Page, site: Site) -> None:
    sign_in(page, site, site.api.token)
    page.get_by_role("link", name="New program").click()
    page.get_by_label("name", exact=True).fill("Black Friday")
    page.get_by_label("short_name").fill("bf_2026")
    page.get_by_label("template").fill("BF-####")
    page.get_by_label("codes_limit").fill("5000")
    page.get_by_role("button", name="Create the program").click()
    expect(page.locator("p.message.done")).to_have_text("The program was created.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Black Friday")
    [created] = site.api.ok("promocodes/programs/list")
    assert (created["short_name"], created["template"], created["codes_limit"]) == ("bf_2026", "BF-####", 5000)


def test_edit_shows_a_refused_setting_next_to_its_field(page: Page, site: Site) -> None:
    spring, _ = seed(site.api)
    sign_in(page, site, site.api.token)
    page.goto(f"{site.base_url}/console/programs/{spring}")
    page.get_by_role("link", name="Edit the settings").click()
    page.get_by_label("short_name").fill("two words")
    page.get_by_role("button", name="Save").click()
    field = page.locator("[data-field='short_name']")
    expect(field.locator(".field-error")).to_contain_text("must not contain spaces")
    expect(page.get_by_label("short_name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".field-error")).to_have_count(1)
    assert site.api.ok("promocodes/programs/get", loyalty_id=spring)["short_name"] == ""


def test_upload_a_10000_code_file_and_see_the_counts(page: Page, site: Site) -> None:
    loyalty_id = site.api.program(name="Mailing")
    site.api.codes(loyalty_id, "MAIL-00000", "MAIL-00001")
    lines = "\n".join(f"MAIL-{n:05d}" for n in range(10_000)) + "\n\x01broken\n"
    sign_in(page, site, site.api.token)
    page.goto(f"{site.base_url}/console/programs/{loyalty_id}")
    page.get_by_label("CSV or text file").set_input_files(
        {"name": "mailing.txt", "mimeType": "text/plain", "buffer": lines.encode()}
    )
    page.get_by_role("button", name="Upload and import").click()
    status = page.locator("[data-upload-status]")
    expect(status).to_have_attribute("data-inserted", "9998", timeout=60_000)
    expect(status).to_have_attribute("data-duplicated", "2")
    expect(status).to_have_attribute("data-invalid", "1")
    expect(status).to_contain_text("Inserted 9998, duplicated 2, invalid 1.")
    expect(page.locator("[data-upload-progress]")).to_have_attribute("value", "100")
    assert site.api.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 10_000


def test_a_chart_is_drawn_with_a_point_per_day_of_the_range(page: Page, site: Site) -> None:
    spring, _ = seed(site.api)  # today: 4 created, 2 attached, 1 activated
    sign_in(page, site, site.api.token)
    today = datetime.now(UTC).date()
    page.goto(f"{site.base_url}/console/programs/{spring}")
    page.get_by_label("From").fill((today - timedelta(days=9)).isoformat())
    page.get_by_role("button", name="Show").click()
    per_day = page.locator("[data-chart='per-day']")
    expect(per_day.locator("[data-point='attached']")).to_have_count(10)
    expect(per_day.locator("[data-point='activated']")).to_have_count(10)
    expect(page.locator("[data-chart='pool'] [data-point='free']")).to_have_count(10)
    last = per_day.locator(f"[data-point='attached'][data-day='{today.isoformat()}']")
    expect(last).to_have_attribute("data-value", "2")
    expect(last.locator("title")).to_have_text(f"{today.isoformat()}: 2 attached")
    funnel = page.locator("[data-chart='funnel'] [data-point]")
    assert [funnel.nth(n).get_attribute("data-value") for n in range(3)] == ["4", "2", "1"]


def test_delete_with_a_confirmation_that_says_what_is_lost(page: Page, site: Site) -> None:
    spring, autumn = seed(site.api)
    sign_in(page, site, site.api.token)
    page.goto(f"{site.base_url}/console/programs/{spring}")
    page.get_by_role("link", name="Delete…").click()
    said = page.locator(".what").inner_text()
    assert re.search(r"its 4 codes — 2 of them attached to profiles and 1 activated", said), said
    page.get_by_role("button", name="Yes: delete the program and its 4 codes").click()
    expect(page.get_by_role("status")).to_have_text(f"Program #{spring} was deleted.")
    expect(page.locator(f"[data-program='{spring}']")).to_have_count(0)
    expect(page.locator(f"[data-program='{autumn}']")).to_have_count(1)
