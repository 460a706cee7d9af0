"""The console in a real browser (Debian's Chromium through Playwright), on both storage adapters
(docs/console.md). Each test starts the application on a real port and walks the pages as a person would."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httpx2
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect, sync_playwright

from promocodes.console.views import CONTENT_SECURITY_POLICY
from promocodes.models import Role
from tests.console.browser import CHROMIUM, CHROMIUM_ARGS, serving_in_thread
from tests.console.helpers import seed
from tests.helpers import Api, issue_token

pytestmark = pytest.mark.slow
T = TypeVar("T")


def off_the_loop(function: Callable[..., T], *args: object) -> T:
    """Run a function that runs an event loop of its own in another thread (Playwright's loop holds this one)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(function, *args).result()


@pytest.fixture
def browser(site: Site) -> Iterator[Browser]:
    """Chromium for one test. Playwright's synchronous API keeps an event loop running in this thread, so it starts
    after the database and the server are ready (their fixtures run their own loops), and whatever the test does
    with a loop of its own goes through :func:`off_the_loop`."""
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Site:
    """The served application, an API client on it with an admin token, and every URL the browser asked for."""

    def __init__(self, base_url: str, api: Api) -> None:
        self.base_url = base_url
        self.api = api
        self.requested: list[str] = []

    def token_for(self, role: Role) -> str:
        return off_the_loop(issue_token, self.api.database_url, "default", role)

    def record(self, request: Request) -> None:
        self.requested.append(request.url)


@pytest.fixture
def site(database_url: str) -> Iterator[Site]:
    token = issue_token(database_url, "default", Role.ADMIN)
    with serving_in_thread(database_url) as base_url, httpx2.Client(base_url=base_url, trust_env=False) as client:
        site = Site(base_url, Api(client, database_url, token))
        yield site
    # Nothing the console showed asked another host for anything (no CDN, no font service, no beacon).
    assert site.requested, "the browser asked for nothing"
    assert all(url.startswith(f"{site.base_url}/") for url in site.requested), site.requested


@pytest.fixture
def context(browser: Browser, site: Site) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1100, "height": 900})
    opened.on("request", site.record)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def sign_in(page: Page, site: Site, token: str) -> None:
    page.goto(f"{site.base_url}/console/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_sign_out(page: Page, site: Site) -> None:
    answer = page.goto(f"{site.base_url}/console")
    assert answer is not None and answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    expect(page).to_have_url(f"{site.base_url}/console/sign-in")
    sign_in(page, site, site.api.token)
    expect(page).to_have_url(f"{site.base_url}/console/programs")
    expect(page.get_by_text("Signed in as")).to_be_visible()
    assert site.api.token not in page.content()
    cookies = page.context.cookies()
    assert [(c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [(True, "Strict", "/console")]
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{site.base_url}/console/sign-in")
    page.goto(f"{site.base_url}/console/programs")
    expect(page).to_have_url(f"{site.base_url}/console/sign-in")


def test_a_bad_token_is_refused_with_a_message(page: Page, site: Site) -> None:
    sign_in(page, site, "pc_this-is-no-token")
    expect(page.get_by_role("alert")).to_have_text("That token is not valid or was revoked.")
    expect(page).to_have_url(f"{site.base_url}/console/sign-in")


def test_the_programs_list_shows_the_counts_of_the_seeded_data(page: Page, site: Site) -> None:
    spring, autumn = seed(site.api)
    sign_in(page, site, site.api.token)
    row = page.locator(f"[data-program='{spring}']")
    counts = {
        name: row.locator(f"[data-stat='{name}']").inner_text()
        for name in ("total", "free", "attached", "activated", "expired")
    }
    assert counts == {"total": "4", "free": "1", "attached": "2", "activated": "1", "expired": "1"}
    widths = {
        name: row.locator(f"rect.{name}").get_attribute("width")
        for name in ("free", "attached", "activated", "expired")
    }
    assert widths == {"free": "25.00", "attached": "50.00", "activated": "25.00", "expired": "25.00"}
    expect(page.locator(f"[data-program='{autumn}'] [data-stat='total']")).to_have_text("0")
    page.get_by_role("link", name="Spring").click()
    expect(page.get_by_role("heading", name="Spring")).to_be_visible()
    expect(page.locator("[data-stat='attached']")).to_have_text("2")


def test_find_a_code_activate_it_through_the_confirmation_and_see_the_timeline_grow(page: Page, site: Site) -> None:
    api = site.api
    winter = api.program(name="Winter", case_sensitive=False)
    api.codes(winter, "WINTER-1")
    db_id = api.database()
    api.profile(db_id, "ann@example.com")
    api.ok("promocodes/attach", loyalty_id=winter, db_id=db_id, email="ann@example.com", code="WINTER-1")
    token = api.ok("tokens/create", role="write", name="support desk")["token"]
    sign_in(page, site, token)
    page.goto(f"{site.base_url}/console/programs/{winter}")
    page.get_by_label("Code", exact=True).fill("winter-1")  # the program ignores case, and so does the search
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", name="Code WINTER-1")).to_be_visible()
    expect(page.locator("[data-field='is_activated']")).to_have_text("no")
    events_before = page.locator(".timeline li").count()
    page.get_by_role("button", name="Activate…").click()
    expect(page.get_by_role("heading", name="Activate?")).to_be_visible()
    page.get_by_role("button", name="Yes: activate").click()
    expect(page.get_by_role("status")).to_have_text("The code was activated.")
    expect(page.locator("[data-field='is_activated']")).to_have_text("yes")
    expect(page.locator(".timeline li")).to_have_count(events_before + 1)
    newest = page.locator(".timeline li").first
    expect(newest.locator(".event")).to_have_text("activated")
    expect(newest.locator(".token-name")).to_have_text("support desk")
    assert api.ok("promocodes/get", loyalty_id=winter, code="WINTER-1")["is_activated"] is True


def test_a_read_token_sees_no_changing_control_and_a_forged_post_is_refused(page: Page, site: Site) -> None:
    spring, _ = seed(site.api)
    sign_in(page, site, site.token_for(Role.READ))
    page.goto(f"{site.base_url}/console/programs/{spring}/code?code=SPRING-2")
    expect(page.get_by_role("heading", name="Code SPRING-2")).to_be_visible()
    assert (
        page.locator("[data-action]").count() == 0
        and page.locator("form[method='post'][action$='/action']").count() == 0
    )
    csrf = page.locator("input[name='csrf']").first.get_attribute("value")
    assert csrf
    forged = page.context.request.post(
        f"{site.base_url}/console/programs/{spring}/action",
        form={"csrf": csrf, "action": "activate", "code": "SPRING-2"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert site.api.ok("promocodes/get", loyalty_id=spring, code="SPRING-2")["is_activated"] is False


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(page: Page, site: Site) -> None:
    spring, _ = seed(site.api)
    sign_in(page, site, site.api.token)
    action = f"{site.base_url}/console/programs/{spring}/action"
    for form in (
        {"action": "activate", "code": "SPRING-2"},
        {"csrf": "wrong", "action": "activate", "code": "SPRING-2"},
    ):
        assert page.context.request.post(action, form=form, max_redirects=0).status == 403
    assert site.api.ok("promocodes/get", loyalty_id=spring, code="SPRING-2")["is_activated"] is False


# --- profiles, tokens and webhooks (console/people.py); every page at phone width; no request leaves -------------


def test_find_a_profile_by_email_with_the_keyboard_and_see_its_codes(page: Page, site: Site) -> None:
    spring, _ = seed(site.api)
    sign_in(page, site, site.token_for(Role.READ))  # a read token may look profiles up
    page.get_by_role("link", name="Profiles").click()
    expect(page.get_by_role("heading", name="Profiles")).to_be_visible()
    page.get_by_label("Find by").select_option("email")
    value = page.get_by_label("Email, phone or profile id")
    value.focus()
    page.keyboard.type("Bob@Example.com")
    page.keyboard.press("Enter")
    rows = page.locator("table.codes tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-code", "SPRING-2")
    expect(page.locator("[data-field='email']")).to_have_text("bob@example.com")
    page.get_by_role("link", name="SPRING-2").click()
    expect(page).to_have_url(f"{site.base_url}/console/programs/{spring}/code?code=SPRING-2")
    expect(page.get_by_role("heading", name="Code SPRING-2")).to_be_visible()
    page.go_back()
    page.get_by_label("Email, phone or profile id").fill("nobody@example.com")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#value-error")).to_contain_text("Profile not found")
    expect(page.get_by_label("Email, phone or profile id")).to_have_attribute("aria-invalid", "true")


def test_create_a_token_see_it_once_copy_it_and_revoke_it(page: Page, site: Site) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base_url)
    sign_in(page, site, site.api.token)
    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Name", exact=True).fill("Anna (support)")
    page.get_by_label("Role").select_option("write")
    page.get_by_role("button", name="Create the token").click()
    expect(page).to_have_url(f"{site.base_url}/console/tokens/created")
    shown = page.get_by_label("The new token")
    expect(shown).to_have_attribute("readonly", "")
    token = shown.input_value()
    assert token.startswith("pc_")
    page.get_by_role("button", name="Copy").click()  # the button appears only with its script
    expect(page.locator(".copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == token
    assert site.api.ok("promocodes/programs/list", token=token) == []
    page.reload()
    expect(page.locator("[data-field='gone']")).to_be_visible()
    assert token not in page.content()
    [created] = [item for item in site.api.ok("tokens/list") if item["name"] == "Anna (support)"]
    page.goto(f"{site.base_url}/console/tokens")
    row = page.locator(f"[data-token='{created['id']}']")
    row.get_by_role("link", name="Revoke Anna (support)…").click()
    expect(page.get_by_role("heading", name=re.compile("Revoke the token Anna"))).to_be_visible()
    page.get_by_role("button", name="Yes: revoke it").click()
    expect(page.get_by_role("status")).to_have_text("The token was revoked.")
    expect(row.locator("[data-field='state']")).to_contain_text("revoked")
    assert site.api.call("promocodes/programs/list", token=token)["error"] == 401


def test_add_a_webhook_see_its_secret_once_and_its_page(page: Page, site: Site) -> None:
    sign_in(page, site, site.api.token)
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL").fill("https://shop.example/hooks/promocodes")
    page.get_by_label("code.activated").check()
    page.get_by_label("program.pool_low").check()
    page.get_by_role("button", name="Add the webhook").click()
    secret = page.get_by_label("The signing secret").input_value()
    assert secret.startswith("whsec_")
    [hook] = site.api.ok("webhooks/list")
    assert hook["events"] == ["code.activated", "program.pool_low"] and hook["active"] is True
    page.get_by_role("link", name="Back to the webhooks").click()
    page.get_by_role("link", name="https://shop.example/hooks/promocodes").click()
    expect(page.get_by_role("heading", name=f"Webhook #{hook['id']}")).to_be_visible()
    page.get_by_role("button", name="Disable…").click()
    page.get_by_role("button", name="Yes: disable it").click()
    expect(page.locator("[data-field='active']")).to_have_text("disabled")
    assert secret not in page.content()


def console_pages(site: Site) -> tuple[list[str], str]:
    """Every page of the console, with data to show on each: the pages to visit before sign-in and after it, with
    an admin token that has a value shown once waiting for it (made by the walk itself)."""
    api = site.api
    spring, _ = seed(api)
    db_id = api.ok("databases/list")[0]["id"]
    long_url = "http://127.0.0.1:9/hooks/a-rather-long-path/that-goes-on-and-on"  # nothing listens there
    hook = api.ok("webhooks/create", url=long_url, events=["code.activated"])
    other = api.ok("tokens/create", role="read", name="a token with a long name, as people give them")
    api.ok("promocodes/activate", loyalty_id=spring, code="SPRING-2")  # a delivery for the webhook's page
    base = f"{site.base_url}/console"
    return [
        f"{base}/programs",
        f"{base}/programs/{spring}",
        f"{base}/programs/{spring}/code?code=SPRING-1",
        f"{base}/programs/{spring}/confirm?code=SPRING-2&action=detach",
        f"{base}/programs/{spring}/confirm?code=SPRING-2&action=expire&expire_date=2030-01-01T00:00",
        f"{base}/profiles?db_id={db_id}&matching=email&value=ann@example.com",
        f"{base}/profiles?db_id={db_id}&matching=email&value=nobody@example.com",
        f"{base}/tokens",
        f"{base}/tokens/{other['id']}/revoke",
        f"{base}/webhooks",
        f"{base}/webhooks/{hook['id']}",
        f"{base}/webhooks/{hook['id']}/confirm?action=delete",
        f"{base}/nowhere",
    ], base


NAMELESS_CONTROLS = """() => [...document.querySelectorAll("input:not([type=hidden]), select, textarea, button")]
    .filter((control) => !(control.getAttribute("aria-label") || "").trim()
        && !(control.getAttribute("aria-labelledby") || "").trim()
        && ![...(control.labels || [])].some((label) => label.textContent.trim())
        && !(control.tagName === "BUTTON" && control.textContent.trim()))
    .map((control) => control.outerHTML)"""


def assert_fits_and_names_every_control(page: Page, url: str) -> None:
    """At the page's width, nothing scrolls sideways, and every control has an accessible name — checked by the
    label rules in the page and by Playwright's own accessible-name computation."""
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= page.evaluate("innerWidth"), f"{url} is {width}px wide"
    assert page.evaluate(NAMELESS_CONTROLS) == [], url
    controls = page.locator("input:not([type=hidden]), select, textarea, button")
    for index in range(controls.count()):
        expect(controls.nth(index)).to_have_accessible_name(re.compile(r"\S"))


def test_every_page_fits_a_phone_names_every_control_and_asks_only_its_own_server(browser: Browser, site: Site) -> None:
    pages, base = console_pages(site)
    asked: list[str] = []
    phone = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    phone.on("request", lambda request: asked.append(request.url))
    phone.on("request", site.record)
    try:
        page = phone.new_page()
        page.goto(f"{base}/sign-in")
        assert_fits_and_names_every_control(page, "sign-in")
        sign_in(page, site, site.api.token)
        for url in pages:
            page.goto(url)
            assert_fits_and_names_every_control(page, url)
        # the pages a form leads to: a new token shown once, and the page once it was shown
        page.goto(f"{base}/tokens")
        page.get_by_label("Name", exact=True).fill("phone")
        page.get_by_role("button", name="Create the token").click()
        expect(page.get_by_label("The new token")).to_be_visible()
        assert_fits_and_names_every_control(page, "tokens/created")
        page.reload()
        assert_fits_and_names_every_control(page, "tokens/created, again")
    finally:
        phone.close()
    # every page, script, style sheet and form post went to the console's own server, and nothing else
    assert len(asked) > len(pages) and any(url.endswith("/static/copy.js") for url in asked)
    assert [url for url in asked if not url.startswith(f"{site.base_url}/")] == []


def test_without_script_a_new_token_is_still_shown_to_select_and_no_dead_button_is_offered(
    browser: Browser, site: Site
) -> None:
    plain = browser.new_context(java_script_enabled=False)
    plain.on("request", site.record)
    try:
        page = plain.new_page()
        sign_in(page, site, site.api.token)
        page.goto(f"{site.base_url}/console/tokens")
        page.get_by_label("Name", exact=True).fill("no script")
        page.get_by_role("button", name="Create the token").click()
        assert page.get_by_label("The new token").input_value().startswith("pc_")
        expect(page.get_by_role("button", name="Copy")).to_have_count(0)  # hidden: not offered
    finally:
        plain.close()
