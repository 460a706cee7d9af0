"""The console in a real browser (Debian's Chromium through Playwright), on both storage adapters
(docs/console.md). Each test starts the application on a real port and walks the pages as a person would."""

from __future__ import annotations

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
