"""Guessing is limited, working traffic is not: failed look-ups of codes and failed token checks run into 429 with
Retry-After, on by default; successful look-ups never do (docs/api.md#rate-limits)."""

from __future__ import annotations

from typing import Any

import pytest

from promocodes.config import Settings
from promocodes.models import Role
from tests.http.helpers import envelope, error_of, post_json, running, setup_program


def test_the_guards_are_on_by_default() -> None:
    settings = Settings()
    assert settings.failed_lookup_limit > 0 and settings.failed_auth_limit > 0


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("promocodes/get", {}),
        ("promocodes/history", {}),
        ("promocodes/activate", {}),
        ("promocodes/update", {"expire_date": ""}),
        ("promocodes/attach", {"db_id": "DB", "email": "ann@example.org"}),
        ("promocodes/detach", {"db_id": "DB", "email": "ann@example.org"}),
    ],
)
def test_guessing_codes_runs_into_429(database_url: str, method: str, fields: dict[str, Any]) -> None:
    """2,000 look-ups of random codes used to be answered one by one, each a database read."""
    with running(database_url, failed_lookup_limit=5) as api:
        loyalty_id = api.program(create_on_attach=False)
        api.codes(loyalty_id, "REAL-1")
        db_id = api.database()
        api.profile(db_id, "ann@example.org")
        sent = {name: db_id if value == "DB" else value for name, value in fields.items()}
        answers = [
            post_json(api, method, {"loyalty_id": loyalty_id, "code": f"GUESS-{index}", **sent}) for index in range(8)
        ]
        assert [answer.status_code for answer in answers] == [200] * 5 + [429] * 3
        assert [error_of(answer)[0] for answer in answers[:5]] == [404] * 5
        assert error_of(answers[5], 429)[0] == 429
        assert int(answers[5].headers["retry-after"]) >= 1
        # The budget is the token's and the address's: another token from the same address is refused as well,
        # while methods that guess nothing go on.
        other = api.token_for(Role.ADMIN)
        again = post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "REAL-1"}, token=other)
        assert again.status_code == 429
        assert envelope(post_json(api, "promocodes/programs/list", {}))["error"] == 0


def test_successful_look_ups_are_never_limited(database_url: str) -> None:
    with running(database_url, failed_lookup_limit=3) as api:
        loyalty_id = setup_program(api, "REAL-1")
        for _ in range(50):
            assert api.ok("promocodes/get", loyalty_id=loyalty_id, code="REAL-1")["code"] == "REAL-1"
        # Misses below the budget do not stop anything either.
        assert error_of(post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "NOPE"}))[0] == 404
        assert api.ok("promocodes/get", loyalty_id=loyalty_id, code="REAL-1")["code"] == "REAL-1"


def test_bad_tokens_from_one_address_run_into_429_without_reaching_the_database(database_url: str) -> None:
    """2,000 requests with invalid tokens used to be checked one by one against the database."""
    with running(database_url, failed_auth_limit=4) as api:
        checked: list[str | None] = []
        authenticator = api.client.app.state.services.authenticator  # type: ignore[attr-defined]
        original = authenticator.authenticate

        async def counting(token: str | None) -> Any:
            checked.append(token)
            return await original(token)

        authenticator.authenticate = counting
        valid = api.token
        api.ok("promocodes/programs/list")  # a valid token is remembered by the worker
        checked.clear()
        answers = [post_json(api, "promocodes/programs/list", {}, token=f"pc_wrong{index}") for index in range(10)]
        assert [answer.status_code for answer in answers] == [200] * 4 + [429] * 6
        assert [error_of(answer)[0] for answer in answers[:4]] == [401] * 4
        assert int(answers[4].headers["retry-after"]) >= 1
        assert len(checked) == 4  # the refused ones never reached the token check
        # A token the worker knows is still served from the same address.
        assert envelope(post_json(api, "promocodes/programs/list", {}, token=valid))["error"] == 0
        # A body token counts the same way.
        in_body = post_json(api, "promocodes/programs/list", {"token": "pc_wrong"}, token=None)
        assert in_body.status_code == 429
