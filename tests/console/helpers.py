"""Helpers of the console tests: sign in through the console's own form, read a page's CSRF token, seed data."""

from __future__ import annotations

import re

import httpx2

from tests.helpers import Api

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: httpx2.Client, token: str) -> httpx2.Response:
    """Load the sign-in page (it sets the pre-session cookie) and post the token with the page's CSRF token."""
    page = client.get("/console/sign-in")
    return client.post("/console/sign-in", data={"csrf": csrf_of(page.text), "token": token}, follow_redirects=False)


def seed(api: Api) -> tuple[int, int]:
    """Two programs: "Spring" with 4 codes (SPRING-1 attached and activated, SPRING-2 attached, SPRING-3 expired,
    SPRING-4 free) and an empty "Autumn". Returns their ids."""
    spring = api.program(name="Spring")
    autumn = api.program(name="Autumn")
    api.codes(spring, "SPRING-1", "SPRING-2", "SPRING-3", "SPRING-4")
    db_id = api.database()
    for code, email in (("SPRING-1", "ann@example.com"), ("SPRING-2", "bob@example.com")):
        api.profile(db_id, email)
        api.ok("promocodes/attach", loyalty_id=spring, db_id=db_id, email=email, code=code)
    api.ok("promocodes/activate", loyalty_id=spring, code="SPRING-1")
    api.ok("promocodes/update", loyalty_id=spring, code="SPRING-3", expire_date="2020-01-01T00:00:00Z")
    return spring, autumn
