"""The console's session cookie and CSRF checks, through the in-process client (docs/console.md#security)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from promocodes.cli.main import app as cli
from promocodes.config import Settings
from promocodes.console.session import COOKIE, SESSION_SECONDS, Session, SessionSigner, console_key
from promocodes.console.views import CONTENT_SECURITY_POLICY
from promocodes.http.app import create_app
from promocodes.models import Role
from tests.client import InProcessClient
from tests.console.helpers import csrf_of, seed, sign_in
from tests.helpers import Api, admin_token


@pytest.fixture
def console(app_settings: Settings) -> Iterator[Api]:
    """The app in-process, with cookies kept by the client between requests, and an admin token."""
    app = create_app(app_settings)
    with InProcessClient(app) as client:
        yield Api(client, app_settings.database_url, admin_token(client, app))


def _cookie_header(response_headers: list[str]) -> str:
    [header] = [value for value in response_headers if value.startswith(f"{COOKIE}=")]
    return header


def test_the_session_cookie_is_signed_http_only_strict_and_holds_no_token(console: Api) -> None:
    page = console.client.get("/console/sign-in")
    anonymous = _cookie_header(page.headers.get_list("set-cookie"))
    answer = sign_in(console.client, console.token)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/programs"
    cookie = _cookie_header(answer.headers.get_list("set-cookie"))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"httponly", "samesite=strict", "path=/console", f"max-age={SESSION_SECONDS}"} <= set(flags)
    assert "secure" not in flags  # plain http here; over https the flag is set (docs/console.md#sessions)
    assert console.token not in cookie and console.token not in answer.headers.get("location", "")
    assert cookie.split(";")[0] != anonymous.split(";")[0]  # sign-in starts a new session
    programs = console.client.get("/console/programs")
    assert programs.status_code == 200 and "Signed in as" in programs.text
    assert console.token not in programs.text


def test_every_console_answer_carries_the_content_security_policy(console: Api) -> None:
    for path in ("/console/sign-in", "/console/static/console.css", "/console/nowhere"):
        answer = console.client.get(path)
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert console.client.get("/console/nowhere").status_code == 404
    assert console.client.get("/console", follow_redirects=False).status_code in (303, 307)


def test_a_bad_token_is_refused_with_a_message_and_no_session(console: Api) -> None:
    answer = sign_in(console.client, "pc_not-a-token")
    assert answer.status_code == 401
    assert "not valid" in answer.text
    assert console.client.get("/console/programs", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("csrf", [None, "", "forged"])
def test_sign_in_without_the_right_csrf_token_is_refused(console: Api, csrf: str | None) -> None:
    console.client.get("/console/sign-in")
    data = {"token": console.token} | ({} if csrf is None else {"csrf": csrf})
    answer = console.client.post("/console/sign-in", data=data, follow_redirects=False)
    assert answer.status_code == 403
    assert console.client.get("/console/programs", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_an_action_without_the_right_csrf_token_changes_nothing(console: Api, csrf: str | None) -> None:
    spring, _ = seed(console)
    sign_in(console.client, console.token)
    data = {"action": "activate", "code": "SPRING-2"} | ({} if csrf is None else {"csrf": csrf})
    answer = console.client.post(f"/console/programs/{spring}/action", data=data, follow_redirects=False)
    assert answer.status_code == 403
    assert console.ok("promocodes/get", loyalty_id=spring, code="SPRING-2")["is_activated"] is False


def test_a_csrf_token_of_another_session_is_refused(console: Api) -> None:
    spring, _ = seed(console)
    sign_in(console.client, console.token)
    other = SessionSigner(b"k" * 32)
    stale = other.csrf_token(Session.fresh())
    answer = console.client.post(
        f"/console/programs/{spring}/action",
        data={"csrf": stale, "action": "activate", "code": "SPRING-2"},
        follow_redirects=False,
    )
    assert answer.status_code == 403


def test_an_action_with_the_csrf_token_is_done_and_recorded_under_the_token_name(console: Api) -> None:
    spring, _ = seed(console)
    token = console.ok("tokens/create", role="write", name="support desk")["token"]
    sign_in(console.client, token)
    page = console.client.get(f"/console/programs/{spring}/confirm", params={"code": "SPRING-2", "action": "activate"})
    assert page.status_code == 200
    answer = console.client.post(
        f"/console/programs/{spring}/action",
        data={"csrf": csrf_of(page.text), "action": "activate", "code": "SPRING-2"},
    )
    assert answer.status_code == 200 and "The code was activated." in answer.text
    assert console.ok("promocodes/get", loyalty_id=spring, code="SPRING-2")["is_activated"] is True
    history = console.ok("promocodes/history", loyalty_id=spring, code="SPRING-2")
    assert history[-1]["event"] == "activated" and history[-1]["token_name"] == "support desk"


def test_a_read_session_is_offered_no_change_and_a_forged_post_is_refused(console: Api) -> None:
    spring, _ = seed(console)
    sign_in(console.client, console.token_for(Role.READ))
    page = console.client.get(f"/console/programs/{spring}/code", params={"code": "SPRING-2"})
    assert page.status_code == 200 and "SPRING-2" in page.text
    assert "/confirm" not in page.text and "/action" not in page.text
    assert (
        console.client.get(
            f"/console/programs/{spring}/confirm", params={"code": "SPRING-2", "action": "activate"}
        ).status_code
        == 403
    )
    forged = console.client.post(
        f"/console/programs/{spring}/action",
        data={"csrf": csrf_of(page.text), "action": "activate", "code": "SPRING-2"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    assert console.ok("promocodes/get", loyalty_id=spring, code="SPRING-2")["is_activated"] is False


def test_sign_out_needs_the_csrf_token_and_ends_the_session(console: Api) -> None:
    sign_in(console.client, console.token)
    page = console.client.get("/console/programs")
    assert console.client.post("/console/sign-out", data={"csrf": ""}, follow_redirects=False).status_code == 403
    answer = console.client.post("/console/sign-out", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"
    assert console.client.get("/console/programs", follow_redirects=False).status_code == 303


def test_a_revoked_token_ends_its_sessions(console: Api) -> None:
    created = console.ok("tokens/create", role="write", name="temp")
    sign_in(console.client, created["token"])
    assert console.client.get("/console/programs", follow_redirects=False).status_code == 200
    console.ok("tokens/revoke", id=created["id"])
    assert console.client.get("/console/programs", follow_redirects=False).status_code == 303


def test_an_altered_cookie_is_no_session(console: Api) -> None:
    sign_in(console.client, console.token)
    value = console.client.cookies[COOKIE]
    console.client.cookies.clear()
    console.client.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console")
    assert console.client.get("/console/programs", follow_redirects=False).status_code == 303


def test_a_session_ends_after_its_time_and_under_another_key() -> None:
    signer = SessionSigner(console_key("a shared secret"))
    session = Session.fresh("digest")
    cookie = signer.dump(session)
    assert signer.load(cookie) == session
    assert SessionSigner(console_key("a shared secret")).load(cookie) == session  # another worker, same secret
    assert SessionSigner(console_key("")).load(cookie) is None  # a random key: another process's sessions fail
    assert signer.load(cookie, now=time.time() + SESSION_SECONDS + 1) is None
    assert signer.load("garbage") is None and signer.load("a.b") is None and signer.load(None) is None


def test_a_code_search_counts_towards_the_failed_lookup_limit(database_url: str) -> None:
    settings = Settings(database_url=database_url, failed_lookup_limit=2)
    app = create_app(settings)
    with InProcessClient(app) as client:
        api = Api(client, database_url, admin_token(client, app))
        spring, _ = seed(api)
        sign_in(client, api.token)
        statuses = [
            client.get(f"/console/programs/{spring}/code", params={"code": f"NOPE-{n}"}).status_code for n in range(3)
        ]
        assert statuses == [404, 404, 429]


def test_config_hides_the_console_secret() -> None:
    shown = CliRunner().invoke(cli, ["config", "--console-secret", "very-secret-value"])
    assert shown.exit_code == 0 and "very-secret-value" not in shown.stdout and "***" in shown.stdout
