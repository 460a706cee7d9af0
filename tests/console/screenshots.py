"""Takes the console screenshots kept in docs/ (``python -m tests.console.screenshots``): a SQLite database with
demo data, the app served in a thread, Debian's Chromium at desktop and phone width."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx2
from playwright.sync_api import sync_playwright

from promocodes.models import Role
from tests.console.browser import CHROMIUM, CHROMIUM_ARGS, serving_in_thread
from tests.console.helpers import seed
from tests.helpers import Api, issue_token

DOCS = Path(__file__).resolve().parents[2] / "docs"


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    database_url = f"sqlite:///{folder}/demo.db"
    token = issue_token(database_url, "default", Role.ADMIN)  # migrates the new file too
    support = issue_token(database_url, "default", Role.WRITE)
    with serving_in_thread(database_url) as base_url, httpx2.Client(base_url=base_url, trust_env=False) as client:
        api = Api(client, database_url, token)
        spring, _ = seed(api)
        api.codes(spring, *[f"SPRING-{n}" for n in range(5, 41)])
        db_id = api.ok("databases/list")[0]["id"]
        api.ok("profiles/import", db_id=db_id, email="ann@example.com", data={"phones": ["+7 900 000-00-00"]})
        winter = api.program(name="Winter", multiple_usage=True)
        api.codes(winter, "WINTER")
        api.ok("promocodes/attach", loyalty_id=winter, db_id=db_id, email="ann@example.com", code="WINTER")
        api.ok("tokens/create", role="write", name="Anna (support)")
        api.ok("tokens/create", role="read", name="Reports")
        hook = api.ok("webhooks/create", url="http://127.0.0.1:9/hooks", events=["code.activated"], description="shop")
        api.ok("promocodes/activate", loyalty_id=winter, code="WINTER", db_id=db_id, email="ann@example.com")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, width in (("", 1100), ("-phone", 390)):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(f"{base_url}/console/sign-in")
                page.get_by_label("API token").fill(support)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url("**/console/programs")
                page.screenshot(path=str(DOCS / f"console-programs{name}.png"), full_page=True)
                page.goto(f"{base_url}/console/programs/{spring}")
                page.screenshot(path=str(DOCS / f"console-program{name}.png"), full_page=True)
                page.goto(f"{base_url}/console/programs/{spring}/code?code=SPRING-1")
                page.screenshot(path=str(DOCS / f"console-code{name}.png"), full_page=True)
                page.goto(f"{base_url}/console/profiles?db_id={db_id}&matching=phone&value=79000000000")
                page.screenshot(path=str(DOCS / f"console-profile{name}.png"), full_page=True)
                page.context.clear_cookies()
                page.goto(f"{base_url}/console/sign-in")  # the tokens and webhooks pages are an admin's
                page.get_by_label("API token").fill(token)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url("**/console/programs")
                page.goto(f"{base_url}/console/tokens")
                page.screenshot(path=str(DOCS / f"console-tokens{name}.png"), full_page=True)
                page.goto(f"{base_url}/console/webhooks/{hook['id']}")
                page.screenshot(path=str(DOCS / f"console-webhook{name}.png"), full_page=True)
                page.close()
            browser.close()
    print("screenshots written to", DOCS, file=sys.stderr)


if __name__ == "__main__":
    main()
