"""The console's profiles, tokens and webhooks pages through the in-process client, on both adapters
(docs/console.md#profiles, #tokens, #webhooks): what each shows, the roles and CSRF checks of every form, values
shown once, and the failed look-up guard."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from promocodes.config import Settings
from promocodes.console.people import ShownOnce
from promocodes.console.session import COOKIE
from promocodes.http.app import create_app
from promocodes.models import Role
from promocodes.service.auth import token_hash
from tests.client import InProcessClient
from tests.console.helpers import csrf_of, seed, sign_in
from tests.helpers import Api, admin_token, sql_rows

HOOK_URL = "http://127.0.0.1:9/hooks"  # the discard port: nothing answers, and no test waits for a delivery


@pytest.fixture
def console(app_settings: Settings) -> Iterator[Api]:
    """The app in-process, its client keeping cookies between requests, and an admin token of account default."""
    app = create_app(app_settings)
    with InProcessClient(app) as client:
        yield Api(client, app_settings.database_url, admin_token(client, app))


def shown_value(html: str) -> str:
    """The value a shown-once page holds in its read-only field."""
    found = re.search(r'<input id="shown"[^>]* value="([^"]+)"', html)
    assert found, "the page shows no value"
    return found.group(1)


def profile_page(console: Api, **query: str | int) -> tuple[int, str]:
    answer = console.client.get("/console/profiles", params=query)
    return answer.status_code, answer.text


# --- profiles ---------------------------------------------------------------------------------------------------


def test_a_profile_found_by_email_shows_the_codes_it_holds_with_links_to_each(console: Api) -> None:
    spring, _ = seed(console)
    db_id = console.ok("databases/list")[0]["id"]
    sign_in(console.client, console.token)
    status, html = profile_page(console, db_id=db_id, matching="email", value="ANN@example.com")
    assert status == 200
    profile_id = console.ok("profiles/get", db_id=db_id, email="ann@example.com")["profile_id"]
    assert f'data-profile="{profile_id}"' in html and "ann@example.com" in html
    assert re.findall(r'<tr data-code="([^"]+)"', html) == ["SPRING-1"]
    assert f'href="/console/programs/{spring}/code?code=SPRING-1"' in html
    row = html[html.index('<tr data-code="SPRING-1"') :]
    assert 'data-field="activated"><time' in row.split("</tr>")[0]  # SPRING-1 was activated
    _, bob = profile_page(console, db_id=db_id, matching="profile_id", value=profile_id.upper())
    assert f'data-profile="{profile_id}"' in bob  # a profile id is compared without regard to case


def test_a_profile_found_by_phone_and_one_holding_no_code(console: Api) -> None:
    db_id = console.database()
    profile_id = console.profile(db_id, "cem@example.com", phones=["+7 900 000-00-00"])
    sign_in(console.client, console.token)
    status, html = profile_page(console, db_id=db_id, matching="phone", value="7 (900) 0000000")
    assert status == 200 and f'data-profile="{profile_id}"' in html
    assert 'data-field="codes">It holds no code.' in html and "<tr data-code" not in html


def test_a_read_token_finds_a_profile_and_is_offered_no_change(console: Api) -> None:
    seed(console)
    db_id = console.ok("databases/list")[0]["id"]
    sign_in(console.client, console.token_for(Role.READ))
    status, html = profile_page(console, db_id=db_id, value="bob@example.com")
    assert status == 200 and '<tr data-code="SPRING-2"' in html
    assert 'method="post"' not in html.replace('action="/console/sign-out"', "").split("<main")[1]


@pytest.mark.parametrize(
    ("query", "field", "status", "text"),
    [
        ({"matching": "email", "value": "nobody@example.com"}, "value", 404, "Profile not found"),
        ({"matching": "phone", "value": "no digits"}, "value", 400, "digit"),
        ({"db_id": 999, "matching": "email", "value": "ann@example.com"}, "db_id", 400, "databases"),
        ({"db_id": "x", "matching": "email", "value": "ann@example.com"}, "db_id", 400, "databases"),
    ],
)
def test_a_look_up_that_fails_says_why_next_to_its_field(
    console: Api, query: dict[str, str | int], field: str, status: int, text: str
) -> None:
    seed(console)
    sign_in(console.client, console.token)
    answer, html = profile_page(console, **query)
    assert answer == status
    error = re.search(rf'<p class="message error field-error" id="{field}-error" role="alert">([^<]*)</p>', html)
    assert error and text in error.group(1), html
    assert f'aria-describedby="{field}-error"' in html


def test_another_accounts_database_is_not_offered_and_not_searched(console: Api) -> None:
    other = console.token_for(Role.ADMIN, account="other")
    theirs = console.database(token=other)
    console.profile(theirs, "ann@example.com", token=other)
    ours = console.database()
    sign_in(console.client, console.token)
    status, html = profile_page(console, db_id=theirs, value="ann@example.com")
    assert status == 400 and "data-profile" not in html and f'<option value="{theirs}"' not in html
    assert f'<option value="{ours}"' in html


def test_a_profile_look_up_that_finds_nothing_counts_towards_the_failed_look_up_limit(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, failed_lookup_limit=2))
    with InProcessClient(app) as client:
        api = Api(client, database_url, admin_token(client, app))
        db_id = api.database()
        api.profile(db_id, "ann@example.com")
        sign_in(client, api.token)
        statuses = [
            client.get("/console/profiles", params={"db_id": db_id, "value": f"nobody{n}@example.com"}).status_code
            for n in range(3)
        ]
        assert statuses == [404, 404, 429]
        # the limit holds for the profile that exists too, until the window ends
        assert client.get("/console/profiles", params={"db_id": db_id, "value": "ann@example.com"}).status_code == 429


# --- who sees the tokens and webhooks pages ---------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.READ, Role.WRITE])
def test_only_an_admin_token_is_offered_and_served_the_tokens_and_webhooks_pages(console: Api, role: Role) -> None:
    sign_in(console.client, console.token_for(role))
    programs = console.client.get("/console/programs").text
    assert 'href="/console/profiles"' in programs
    assert 'href="/console/tokens"' not in programs and 'href="/console/webhooks"' not in programs
    for path in ("/console/tokens", "/console/webhooks", "/console/tokens/1/revoke", "/console/tokens/created"):
        answer = console.client.get(path)
        assert answer.status_code == 403 and "may not manage" in answer.text, path
    console.client.cookies.clear()
    sign_in(console.client, console.token)
    programs = console.client.get("/console/programs").text
    assert 'href="/console/tokens"' in programs and 'href="/console/webhooks"' in programs


@pytest.mark.parametrize("role", [Role.READ, Role.WRITE])
def test_a_forged_post_of_a_token_that_may_not_manage_is_refused_and_changes_nothing(console: Api, role: Role) -> None:
    hook = console.ok("webhooks/create", url=HOOK_URL, events=["code.activated"])
    victim = console.ok("tokens/create", role="read", name="victim")
    sign_in(console.client, console.token_for(role))
    csrf = csrf_of(console.client.get("/console/programs").text)
    tokens_before = console.ok("tokens/list")
    posts = [
        ("/console/tokens", {"name": "forged", "role": "admin"}),
        (f"/console/tokens/{victim['id']}/revoke", {}),
        ("/console/webhooks", {"url": HOOK_URL, "event.code.attached": "on"}),
        (f"/console/webhooks/{hook['id']}/action", {"action": "delete"}),
        (f"/console/webhooks/{hook['id']}/action", {"action": "disable"}),
    ]
    for path, form in posts:
        answer = console.client.post(path, data={"csrf": csrf, **form}, follow_redirects=False)
        assert answer.status_code == 403, (path, answer.text)
    assert console.ok("tokens/list") == tokens_before
    assert console.ok("webhooks/list") == [{key: value for key, value in hook.items() if key != "secret"}]


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_an_admin_post_without_the_right_csrf_token_changes_nothing(console: Api, csrf: str | None) -> None:
    hook = console.ok("webhooks/create", url=HOOK_URL, events=["code.activated"])
    victim = console.ok("tokens/create", role="read", name="victim")
    sign_in(console.client, console.token)
    given = {} if csrf is None else {"csrf": csrf}
    for path, form in (
        ("/console/tokens", {"name": "forged", "role": "admin"}),
        (f"/console/tokens/{victim['id']}/revoke", {"confirm": "yes"}),  # a form with a field, so it is one
        ("/console/webhooks", {"url": HOOK_URL, "event.code.attached": "on"}),
        (f"/console/webhooks/{hook['id']}/action", {"action": "delete"}),
    ):
        answer = console.client.post(path, data={**given, **form}, follow_redirects=False)
        assert answer.status_code == 403, path
    assert [token["name"] for token in console.ok("tokens/list")] == ["", "victim"]
    assert all(token["revoked"] == "" for token in console.ok("tokens/list"))
    assert len(console.ok("webhooks/list")) == 1


# --- tokens -----------------------------------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_works_and_the_list_never_shows_a_secret(console: Api) -> None:
    sign_in(console.client, console.token)
    page = console.client.get("/console/tokens")
    assert page.status_code == 200
    answer = console.client.post(
        "/console/tokens", data={"csrf": csrf_of(page.text), "name": "Anna (support)", "role": "write"}
    )
    assert answer.status_code == 200 and str(answer.url).endswith("/console/tokens/created")
    token = shown_value(answer.text)
    assert token.startswith("pc_") and "Anna (support)" in answer.text and "write" in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert 'src="/console/static/copy.js"' in answer.text and "<script>" not in answer.text
    # the token works, with its role and name
    assert console.ok("promocodes/programs/list", token=token) == []
    assert console.call("tokens/list", token=token)["error"] == 403
    [created] = [item for item in console.ok("tokens/list") if item["name"] == "Anna (support)"]
    assert created["role"] == "write"
    # shown once: the page again (a reload) no longer has it
    again = console.client.get("/console/tokens/created")
    assert again.status_code == 410 and token not in again.text and 'data-field="gone"' in again.text
    listed = console.client.get("/console/tokens").text
    assert token not in listed and token_hash(token) not in listed and token_hash(console.token) not in listed
    assert f'data-token="{created["id"]}"' in listed and "Anna (support)" in listed


def test_a_shown_once_cookie_of_another_session_or_altered_shows_nothing(console: Api) -> None:
    sign_in(console.client, console.token)
    page = console.client.get("/console/tokens")
    answer = console.client.post(
        "/console/tokens", data={"csrf": csrf_of(page.text), "role": "read"}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/tokens/created"
    once = console.client.cookies.get(ShownOnce.COOKIE)
    assert once and "pc_" not in answer.headers["location"]
    flags = next(v for v in answer.headers.get_list("set-cookie") if v.startswith(ShownOnce.COOKIE)).lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console/tokens/created" in flags
    # another session of the same token: the value was given to the first one only
    console.client.cookies.delete(COOKIE)
    sign_in(console.client, console.token)
    assert console.client.get("/console/tokens/created").status_code == 410
    body, mac = once.split(".")
    console.client.cookies.set(ShownOnce.COOKIE, f"{body}.{mac[:-2]}AA", path="/console/tokens/created")
    assert console.client.get("/console/tokens/created").status_code == 410


@pytest.mark.parametrize(("form", "field"), [({"role": "owner"}, "role"), ({"role": "read", "name": "a\x01"}, "name")])
def test_a_token_form_with_a_bad_field_says_so_next_to_it_and_creates_nothing(
    console: Api, form: dict[str, str], field: str
) -> None:
    sign_in(console.client, console.token)
    page = console.client.get("/console/tokens")
    answer = console.client.post("/console/tokens", data={"csrf": csrf_of(page.text), **form})
    assert answer.status_code == 400
    assert f'id="{field}-error"' in answer.text and f'aria-describedby="{field}-error"' in answer.text
    assert len(console.ok("tokens/list")) == 1


def test_revoke_a_token_through_its_confirmation(console: Api) -> None:
    other = console.ok("tokens/create", role="write", name="checkout")
    sign_in(console.client, console.token)
    confirm = console.client.get(f"/console/tokens/{other['id']}/revoke")
    assert confirm.status_code == 200 and "checkout" in confirm.text and 'data-field="own"' not in confirm.text
    answer = console.client.post(f"/console/tokens/{other['id']}/revoke", data={"csrf": csrf_of(confirm.text)})
    assert answer.status_code == 200 and "The token was revoked." in answer.text
    assert console.call("promocodes/programs/list", token=other["token"])["error"] == 401
    assert f'<tr data-token="{other["id"]}">' in answer.text and "Revoke…" not in answer.text.split(other["name"])[1]
    assert console.client.get("/console/tokens/999/revoke").status_code == 404


def test_revoking_your_own_token_says_so_and_ends_your_session(console: Api) -> None:
    own = console.ok("tokens/create", role="admin", name="me")
    sign_in(console.client, own["token"])
    confirm = console.client.get(f"/console/tokens/{own['id']}/revoke")
    assert 'data-field="own"' in confirm.text and "ends your session" in confirm.text
    answer = console.client.post(
        f"/console/tokens/{own['id']}/revoke", data={"csrf": csrf_of(confirm.text)}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"
    assert console.client.get("/console/tokens", follow_redirects=False).status_code == 303
    assert [item["revoked"] != "" for item in console.ok("tokens/list") if item["id"] == own["id"]] == [True]


# --- webhooks ---------------------------------------------------------------------------------------------------


def add_webhook(console: Api, **form: str) -> tuple[int, str]:
    page = console.client.get("/console/webhooks")
    answer = console.client.post("/console/webhooks", data={"csrf": csrf_of(page.text), **form})
    return answer.status_code, answer.text


def test_a_new_webhook_shows_its_secret_once_and_is_listed(console: Api) -> None:
    sign_in(console.client, console.token)
    status, html = add_webhook(
        console, url=HOOK_URL, description="shop", **{"event.code.activated": "on", "event.program.pool_low": "on"}
    )
    assert status == 200
    secret = shown_value(html)
    assert secret.startswith("whsec_")
    [hook] = console.ok("webhooks/list")
    assert (hook["url"], hook["events"], hook["description"], hook["active"]) == (
        HOOK_URL,
        ["code.activated", "program.pool_low"],
        "shop",
        True,
    )
    assert secret not in console.client.get("/console/webhooks/created").text
    listed = console.client.get("/console/webhooks").text
    assert f'data-webhook="{hook["id"]}"' in listed and secret not in listed


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"url": "ftp://shop.example/x", "event.code.attached": "on"}, "url"),
        ({"url": "shop.example", "event.code.attached": "on"}, "url"),
        ({"url": HOOK_URL}, "events"),
    ],
)
def test_a_webhook_form_with_a_bad_field_says_so_next_to_it_and_adds_nothing(
    console: Api, form: dict[str, str], field: str
) -> None:
    sign_in(console.client, console.token)
    status, html = add_webhook(console, **form)
    assert status == 400 and f'id="{field}-error"' in html
    assert f'value="{form["url"]}"' in html  # what was typed is kept
    assert console.ok("webhooks/list") == []


def test_disable_enable_and_delete_a_webhook_through_confirmations(console: Api) -> None:
    hook = console.ok("webhooks/create", url=HOOK_URL, events=["code.activated"])
    sign_in(console.client, console.token)
    base = f"/console/webhooks/{hook['id']}"
    confirm = console.client.get(f"{base}/confirm", params={"action": "disable"})
    assert confirm.status_code == 200 and "What it is owed waits" in confirm.text.replace("\n", " ")
    answer = console.client.post(f"{base}/action", data={"csrf": csrf_of(confirm.text), "action": "disable"})
    assert answer.status_code == 200 and 'data-field="active">disabled' in answer.text
    assert console.ok("webhooks/list")[0]["active"] is False
    answer = console.client.post(f"{base}/action", data={"csrf": csrf_of(answer.text), "action": "enable"})
    assert 'data-field="active">active' in answer.text and console.ok("webhooks/list")[0]["active"] is True
    confirm = console.client.get(f"{base}/confirm", params={"action": "delete"})
    assert "never sent" in confirm.text
    answer = console.client.post(f"{base}/action", data={"csrf": csrf_of(confirm.text), "action": "delete"})
    assert answer.status_code == 200 and "The webhook was deleted." in answer.text
    assert console.ok("webhooks/list") == [] and console.client.get(base).status_code == 404
    assert console.client.get(f"/console/webhooks/{hook['id']}/confirm?action=explode").status_code == 400


def test_a_webhook_page_shows_its_recent_deliveries_and_failures(console: Api) -> None:
    hook = console.ok("webhooks/create", url=HOOK_URL, events=["code.activated"])
    spring, _ = seed(console)  # activates SPRING-1: one delivery owed
    console.ok("promocodes/activate", loyalty_id=spring, code="SPRING-2")
    deliveries = console.ok("webhooks/deliveries", id=hook["id"])
    assert len(deliveries) == 2
    # the older delivery failed for good, as the worker marks one after 24 hours of retries
    console.client.run(  # type: ignore[attr-defined]
        sql_rows(
            console.database_url,
            "UPDATE webhook_deliveries SET state = 'failed', attempts = 7, last_status = 503, "
            "last_error = 'HTTP 503', finished = created WHERE id = $1",
            deliveries[-1]["id"],
        )
    )
    sign_in(console.client, console.token)
    html = console.client.get(f"/console/webhooks/{hook['id']}").text
    states = re.findall(r'<tr data-delivery="(\d+)" data-state="(\w+)"', html)
    assert states == [(str(deliveries[0]["id"]), deliveries[0]["state"]), (str(deliveries[1]["id"]), "failed")]
    assert "HTTP 503" in html and 'data-field="failed">1 of the latest 2 deliveries failed' in html
    assert html.count("code.activated") >= 2


def test_several_profiles_matching_one_value_is_said_next_to_it(console: Api) -> None:
    db_id = console.database()
    for email in ("ann@example.com", "bob@example.com"):
        console.profile(db_id, email, phones=["+7 900 000-00-00"])
    sign_in(console.client, console.token)
    status, html = profile_page(console, db_id=db_id, matching="phone", value="79000000000")
    assert status == 409 and 'id="value-error"' in html and "Several profiles match" in html
