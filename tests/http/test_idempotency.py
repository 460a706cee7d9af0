"""Idempotent retries through the HTTP API (docs/api.md#idempotent-retries), on both adapters: a retry with the same
``Idempotency-Key`` gets the first answer again and executes nothing; what is kept, what is not, for how long, for
whom; and one key sent by fifty clients at once executes once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from promocodes.domain.times import utcnow
from promocodes.errors import StorageUnavailable
from promocodes.http.encoding import encode_xml
from promocodes.http.routes import METHODS
from promocodes.models import Role
from promocodes.service.promocodes import IN_THREAD_ITEMS
from promocodes.store import Store
from tests.helpers import Api
from tests.http.helpers import bound_code, envelope, error_of, post, post_json, running, setup_program
from tests.live import LiveServer, serving

KEY = "order-1042/attempt"
REUSED = (
    409,
    "This Idempotency-Key was already used for a different request (another method or other parameters); "
    "nothing was executed: send a new key for a new request",
)
ANN = "ann@example.org"


# --- one scenario per writing method: it prepares what the request needs and returns the request's fields -------


def _import(api: Api) -> dict[str, Any]:
    return {"loyalty_id": setup_program(api, "OLD-1"), "codes": ["NEW-1", "OLD-1", "NEW-1", " "]}


def _activate(api: Api) -> dict[str, Any]:
    loyalty_id, _, _ = bound_code(api, "ACT-1")
    return {"loyalty_id": loyalty_id, "code": "ACT-1"}


def _update(api: Api) -> dict[str, Any]:
    loyalty_id, _, _ = bound_code(api, "UPD-1")
    return {"loyalty_id": loyalty_id, "code": "UPD-1", "activated": True, "expire_date": "2099-01-01T00:00:00Z"}


def _attach(api: Api) -> dict[str, Any]:
    loyalty_id = setup_program(api, "POOL-1", "POOL-2")
    db_id = api.database()
    api.profile(db_id, ANN)
    return {"loyalty_id": loyalty_id, "db_id": db_id, "email": ANN}


def _detach(api: Api) -> dict[str, Any]:
    loyalty_id, db_id, _ = bound_code(api, "DET-1")
    return {"loyalty_id": loyalty_id, "db_id": db_id, "email": ANN, "code": "DET-1"}


def _generate(api: Api) -> dict[str, Any]:
    return {"loyalty_id": setup_program(api), "count": 5, "template": "GEN-######", "return_codes": True}


def _program_update(api: Api) -> dict[str, Any]:
    return {"loyalty_id": setup_program(api), "description": "Spring, again"}


def _program_delete(api: Api) -> dict[str, Any]:
    return {"loyalty_id": setup_program(api, "GONE-1")}


def _profile_import(api: Api) -> dict[str, Any]:
    return {"db_id": api.database(), "email": "bob@example.org", "data": {"city": "Riga", "phones": ["+371 2000"]}}


def _profile_delete(api: Api) -> dict[str, Any]:
    db_id = api.database()
    api.profile(db_id, ANN)
    return {"db_id": db_id, "email": ANN}


def _token_revoke(api: Api) -> dict[str, Any]:
    return {"id": api.ok("tokens/create", role="read", name="till")["id"]}


def _webhook(api: Api) -> int:
    webhook_id: int = api.ok("webhooks/create", url="https://shop.example/hooks", events=["code.attached"])["id"]
    return webhook_id


SCENARIOS: dict[str, Callable[[Api], dict[str, Any]]] = {
    "promocodes/import": _import,
    "promocodes/generate": _generate,
    "promocodes/activate": _activate,
    "promocodes/update": _update,
    "promocodes/attach": _attach,
    "promocodes/detach": _detach,
    "promocodes/programs/create": lambda api: {"name": "Spring", "codes_limit": 10},
    "promocodes/programs/update": _program_update,
    "promocodes/programs/delete": _program_delete,
    "databases/create": lambda api: {"name": "newsletter"},
    "profiles/import": _profile_import,
    "profiles/delete": _profile_delete,
    "tokens/revoke": _token_revoke,
    "webhooks/update": lambda api: {"id": _webhook(api), "events": ["code.activated"], "active": False},
    "webhooks/delete": lambda api: {"id": _webhook(api)},
}
WRITING = [method.path.removeprefix("/api/v1.1/") for method in METHODS if method.idempotent]
READING = [
    method.path.removeprefix("/api/v1.1/")
    for method in METHODS
    if not method.idempotent and method.path not in ("/api/v1.1/tokens/create", "/api/v1.1/webhooks/create")
]


def everything(api: Api) -> dict[str, Any]:
    """What the account holds, as the API shows it: programs with their codes, databases, tokens."""
    programs = api.ok("promocodes/programs/list")
    return {
        "programs": programs,
        "codes": {p["id"]: api.ok("promocodes/export_all", loyalty_id=p["id"]) for p in programs},
        "databases": api.ok("databases/list"),
        "tokens": api.ok("tokens/list"),
        "webhooks": api.ok("webhooks/list"),
    }


def replayed(response: Any) -> bool:
    return response.headers.get("idempotent-replayed") == "true"


def test_every_writing_method_takes_a_key_but_tokens_create() -> None:
    """Writing = a capability that may change something; the answers of tokens/create and webhooks/create hold a
    secret that is never kept, and tokens/list, webhooks/list and webhooks/deliveries only read."""
    may_write = {method.path.removeprefix("/api/v1.1/") for method in METHODS if method.capability.writes}
    writes = {method.path.removeprefix("/api/v1.1/") for method in METHODS if method.writes}
    assert may_write - writes == {"tokens/list", "webhooks/list", "webhooks/deliveries"}
    assert set(WRITING) == writes - {"tokens/create", "webhooks/create"}


@pytest.mark.parametrize("method", WRITING)
def test_a_retry_gets_the_first_answer_byte_for_byte_and_executes_nothing(api: Api, method: str) -> None:
    """Every writing method (a new one fails here until it has a scenario and keeps its answer)."""
    fields = SCENARIOS[method](api)
    first = post_json(api, method, fields, Idempotency_Key=KEY)
    assert envelope(first)["error"] == 0, first.text
    assert "idempotent-replayed" not in first.headers
    before = everything(api)

    again = post_json(api, method, fields, Idempotency_Key=KEY)
    in_xml = post_json(api, method, fields, Idempotency_Key=KEY, query="?format=xml")

    assert (again.status_code, again.content) == (200, first.content)
    assert replayed(again)
    assert again.headers["content-type"].startswith("application/json")
    # Another format: the same outcome, written as the first answer would have been in XML.
    assert in_xml.headers["content-type"].startswith("application/xml")
    assert in_xml.content == encode_xml(json.loads(first.content))
    assert replayed(in_xml)
    assert in_xml.headers["cache-control"] == "no-store"
    assert everything(api) == before


def test_a_generate_retry_answers_the_codes_of_the_first_and_makes_no_more(api: Api) -> None:
    fields = _generate(api)
    first = post_json(api, "promocodes/generate", fields, Idempotency_Key=KEY)
    again = post_json(api, "promocodes/generate", fields, Idempotency_Key=KEY)
    codes = envelope(first)["data"]["codes"]
    assert len(codes) == 5 and again.content == first.content and replayed(again)
    assert sorted(item["code"] for item in api.ok("promocodes/export_all", loyalty_id=fields["loyalty_id"])) == sorted(
        codes
    )


def test_a_generate_past_the_limit_is_kept_and_replayed(api: Api) -> None:
    """402 is kept (the program's state refused it): the retry replays it even after the limit was raised."""
    loyalty_id = api.program(codes_limit=3)
    fields = {"loyalty_id": loyalty_id, "count": 5, "template": "GEN-######"}
    first = post_json(api, "promocodes/generate", fields, Idempotency_Key=KEY)
    assert envelope(first)["error"] == 402
    api.ok("promocodes/programs/update", loyalty_id=loyalty_id, codes_limit=None)
    again = post_json(api, "promocodes/generate", fields, Idempotency_Key=KEY)
    assert again.content == first.content and replayed(again)
    assert api.ok("promocodes/export_all", loyalty_id=loyalty_id) == []


def test_a_retry_may_send_the_same_parameters_in_another_body_format(api: Api) -> None:
    """The parameters are compared as the method reads them: "5" and 5, JSON, XML and form bodies alike."""
    loyalty_id = setup_program(api)
    first = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": ["X-1"]}, Idempotency_Key=KEY)
    xml = f"<xml><loyalty_id>{loyalty_id}</loyalty_id><codes>X-1</codes><idempotency_key>{KEY}</idempotency_key></xml>"
    as_xml = post(api, "promocodes/import", xml, content_type="application/xml")
    as_form = post(
        api, "promocodes/import", f"loyalty_id={loyalty_id}&codes=X-1", content_type="application/x-www-form-urlencoded"
    )
    as_form_with_key = post(
        api,
        "promocodes/import",
        f"loyalty_id={loyalty_id}&codes=X-1&idempotency_key=order-1042%2Fattempt",
        content_type="application/x-www-form-urlencoded",
    )
    assert as_xml.content == first.content and replayed(as_xml)
    assert not replayed(as_form)  # no key: executed, the code is a duplicate now
    assert envelope(as_form)["duplicated"] == 1
    assert as_form_with_key.content == first.content and replayed(as_form_with_key)


def test_the_key_may_travel_in_the_body_and_the_header_wins(api: Api) -> None:
    first = post_json(api, "databases/create", {"name": "main", "idempotency_key": "in-the-body"})
    by_header = post_json(api, "databases/create", {"name": "main"}, Idempotency_Key="in-the-body")
    header_wins = post_json(
        api, "databases/create", {"name": "main", "idempotency_key": "in-the-body"}, Idempotency_Key="another"
    )
    assert by_header.content == first.content and replayed(by_header)
    assert not replayed(header_wins)  # a new key: executed
    assert [database["name"] for database in api.ok("databases/list")] == ["main", "main"]


def test_the_same_key_with_other_parameters_or_another_method_is_409_and_executes_nothing(api: Api) -> None:
    first = post_json(api, "promocodes/programs/create", {"name": "Spring"}, Idempotency_Key=KEY)
    other_fields = post_json(api, "promocodes/programs/create", {"name": "Summer"}, Idempotency_Key=KEY)
    other_method = post_json(api, "databases/create", {"name": "Spring"}, Idempotency_Key=KEY)
    assert error_of(other_fields) == REUSED
    assert error_of(other_method) == REUSED
    assert not replayed(other_fields)
    assert [program["name"] for program in api.ok("promocodes/programs/list")] == ["Spring"]
    assert api.ok("databases/list") == []
    # The refusal was about the key and is not kept: the first answer still stands.
    again = post_json(api, "promocodes/programs/create", {"name": "Spring"}, Idempotency_Key=KEY)
    assert again.content == first.content and replayed(again)


@pytest.mark.parametrize("method", READING)
def test_read_only_methods_ignore_the_key_entirely(api: Api, method: str) -> None:
    fields: dict[str, Any] = {}
    if method in ("promocodes/get", "promocodes/export_all", "promocodes/history", "promocodes/programs/get"):
        fields = {"loyalty_id": setup_program(api, "READ-1"), "code": "READ-1"}
    if method == "profiles/get":
        fields = {"db_id": api.database(), "email": ANN}
        api.profile(fields["db_id"], ANN)
    if method == "webhooks/deliveries":
        fields = {"id": _webhook(api)}
    invalid = post_json(api, method, {**fields, "idempotency_key": 42}, Idempotency_Key="x" * 300)
    valid = post_json(api, method, fields, Idempotency_Key=KEY)
    again = post_json(api, method, fields, Idempotency_Key=KEY)
    assert envelope(invalid)["error"] == 0, invalid.text
    assert envelope(valid)["error"] == 0 and envelope(again)["error"] == 0
    assert not any(replayed(response) for response in (invalid, valid, again))


def test_tokens_create_ignores_the_key_its_answer_holds_a_secret(api: Api) -> None:
    first = post_json(api, "tokens/create", {"role": "read"}, Idempotency_Key=KEY)
    second = post_json(api, "tokens/create", {"role": "read"}, Idempotency_Key=KEY)
    assert envelope(first)["data"]["token"] != envelope(second)["data"]["token"]
    assert not replayed(second)
    unchecked = post_json(api, "tokens/create", {"role": "read"}, Idempotency_Key="")
    assert envelope(unchecked)["error"] == 0


def test_webhooks_create_ignores_the_key_its_answer_holds_a_secret(api: Api) -> None:
    fields = {"url": "https://shop.example/hooks", "events": ["code.attached"]}
    first = post_json(api, "webhooks/create", fields, Idempotency_Key=KEY)
    second = post_json(api, "webhooks/create", fields, Idempotency_Key=KEY)
    assert envelope(first)["data"]["secret"] != envelope(second)["data"]["secret"]
    assert envelope(first)["data"]["id"] != envelope(second)["data"]["id"]
    assert not replayed(second)
    assert envelope(post_json(api, "webhooks/create", fields, Idempotency_Key=""))["error"] == 0


@pytest.mark.parametrize(
    ("header", "field", "named"),
    [
        ("", None, "Header `Idempotency-Key`"),
        ("k" * 256, None, "Header `Idempotency-Key`"),
        (None, "", "Field `idempotency_key`"),
        (None, "é-key", "Field `idempotency_key`"),
        (None, "tab\tkey", "Field `idempotency_key`"),
        (None, 1042, "Field `idempotency_key`"),
        (None, ["a", "b"], "Field `idempotency_key`"),
    ],
)
def test_an_invalid_key_is_400_naming_it_and_changes_nothing(
    api: Api, header: str | None, field: object, named: str
) -> None:
    fields: dict[str, Any] = {"name": "Spring"} if field is None else {"name": "Spring", "idempotency_key": field}
    headers = {} if header is None else {"Idempotency_Key": header}
    response = post_json(api, "promocodes/programs/create", fields, **headers)
    assert error_of(response) == (400, f"{named} must be 1 to 255 printable ASCII characters")
    assert api.ok("promocodes/programs/list") == []


def test_a_key_of_255_printable_characters_is_valid(api: Api) -> None:
    key = (" !~" * 85)[:255]
    first = post_json(api, "databases/create", {"name": "main", "idempotency_key": key})
    again = post_json(api, "databases/create", {"name": "main", "idempotency_key": key})
    assert envelope(first)["error"] == 0
    assert again.content == first.content and replayed(again)


def test_the_role_is_checked_before_the_key(api: Api) -> None:
    reader = api.token_for(Role.READ)
    response = post_json(api, "databases/create", {"name": "main"}, token=reader, Idempotency_Key="")
    assert error_of(response)[0] == 403


def test_a_refusal_before_the_operation_is_not_kept_and_a_corrected_retry_executes(api: Api) -> None:
    refused = post_json(api, "promocodes/programs/create", {"name": " "}, Idempotency_Key=KEY)
    assert error_of(refused) == (400, "Field `name` must not be empty")
    corrected = post_json(api, "promocodes/programs/create", {"name": "Spring"}, Idempotency_Key=KEY)
    assert envelope(corrected)["error"] == 0 and not replayed(corrected)
    unauthorized = post_json(api, "databases/create", {"name": "main"}, token="pc_nobody", Idempotency_Key="k-401")
    assert error_of(unauthorized)[0] == 401
    assert envelope(post_json(api, "databases/create", {"name": "main"}, Idempotency_Key="k-401"))["error"] == 0


def test_404_and_409_of_the_operation_are_kept(api: Api) -> None:
    """Refused by the write itself (in its transaction): the retry gets the refusal even after the state changed."""
    loyalty_id = setup_program(api, "FREE-1")
    db_id = api.database()
    api.profile(db_id, ANN)
    later, free_code = {"loyalty_id": loyalty_id, "code": "LATER-1"}, {"loyalty_id": loyalty_id, "code": "FREE-1"}
    missing = post_json(api, "promocodes/activate", later, Idempotency_Key="a")
    free = post_json(api, "promocodes/activate", free_code, Idempotency_Key="b")
    assert error_of(missing) == (404, f"Promo code 'LATER-1' not found in program {loyalty_id}")
    assert error_of(free) == (409, "Promo code is not attached to any profile")
    api.codes(loyalty_id, "LATER-1")
    for code in ("LATER-1", "FREE-1"):
        api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email=ANN, code=code)

    missing_again = post_json(api, "promocodes/activate", later, Idempotency_Key="a")
    free_again = post_json(api, "promocodes/activate", free_code, Idempotency_Key="b")
    assert missing_again.content == missing.content and replayed(missing_again)
    assert free_again.content == free.content and replayed(free_again)
    assert api.ok("promocodes/get", loyalty_id=loyalty_id, code="FREE-1")["is_activated"] is False


def test_refusals_found_by_a_read_are_kept_too(api: Api) -> None:
    """404 for a program that does not exist yet, 409 for an inactive program: judged before any write."""
    absent = post_json(api, "promocodes/import", {"loyalty_id": 1, "codes": ["A"]}, Idempotency_Key="absent")
    assert error_of(absent) == (404, "Program 1 not found")
    loyalty_id = setup_program(api, "IDLE-1")
    assert loyalty_id == 1
    api.ok("promocodes/programs/update", loyalty_id=loyalty_id, active=False)
    db_id = api.database()
    api.profile(db_id, ANN)
    attach = {"loyalty_id": loyalty_id, "db_id": db_id, "email": ANN}
    inactive = post_json(api, "promocodes/attach", attach, Idempotency_Key="inactive")
    assert error_of(inactive) == (409, f"Program {loyalty_id} is inactive: no codes can be attached")
    api.ok("promocodes/programs/update", loyalty_id=loyalty_id, active=True)

    absent_again = post_json(api, "promocodes/import", {"loyalty_id": 1, "codes": ["A"]}, Idempotency_Key="absent")
    inactive_again = post_json(api, "promocodes/attach", attach, Idempotency_Key="inactive")
    assert absent_again.content == absent.content and replayed(absent_again)
    assert inactive_again.content == inactive.content and replayed(inactive_again)
    assert [item["code"] for item in api.ok("promocodes/export_all", loyalty_id=loyalty_id)] == ["IDLE-1"]


def test_402_is_kept(api: Api) -> None:
    loyalty_id = api.program(codes_limit=1)
    api.codes(loyalty_id, "ONLY-1")
    db_id = api.database()
    api.profile(db_id, ANN)
    attach = {"loyalty_id": loyalty_id, "db_id": db_id, "email": ANN, "code": "NEW-1"}
    first = post_json(api, "promocodes/attach", attach, Idempotency_Key=KEY)
    assert error_of(first) == (402, "Program limit exceeded")
    api.ok("promocodes/programs/update", loyalty_id=loyalty_id, codes_limit=None)
    again = post_json(api, "promocodes/attach", attach, Idempotency_Key=KEY)
    assert again.content == first.content and replayed(again)


def test_a_storage_failure_is_not_kept_and_a_retry_executes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    loyalty_id, _, _ = bound_code(api, "ACT-1")
    store: Store = api.client.app.state.services.store

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("The database is unavailable; retry later")

    fields = {"loyalty_id": loyalty_id, "code": "ACT-1"}
    with monkeypatch.context() as patch:
        patch.setattr(store, "activate", unavailable)
        failed = post_json(api, "promocodes/activate", fields, Idempotency_Key=KEY)
    assert failed.status_code == 503
    retried = post_json(api, "promocodes/activate", fields, Idempotency_Key=KEY)
    assert envelope(retried)["error"] == 0 and not replayed(retried)
    assert api.ok("promocodes/get", **fields)["is_activated"] is True


def test_the_answer_and_the_change_are_written_together(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the answer cannot be written, the change it describes is rolled back with it."""
    loyalty_id, _, _ = bound_code(api, "ACT-1")
    fields = {"loyalty_id": loyalty_id, "code": "ACT-1"}

    async def broken(*args: object) -> bool:
        raise StorageUnavailable("The database is unavailable; retry later")

    with monkeypatch.context() as patch:
        patch.setattr("promocodes.store.claims.insert_answer", broken)
        failed = post_json(api, "promocodes/activate", fields, Idempotency_Key=KEY)
    assert failed.status_code == 503
    assert api.ok("promocodes/get", **fields)["is_activated"] is False  # the activation went with the answer
    retried = post_json(api, "promocodes/activate", fields, Idempotency_Key=KEY)
    assert envelope(retried)["error"] == 0 and not replayed(retried)
    assert api.ok("promocodes/get", **fields)["is_activated"] is True


def test_an_expired_answer_counts_as_absent(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    first = post_json(api, "promocodes/programs/create", {"name": "Spring"}, Idempotency_Key=KEY)
    later = utcnow() + timedelta(hours=24, seconds=1)
    monkeypatch.setattr("promocodes.service.idempotency.utcnow", lambda: later)
    again = post_json(api, "promocodes/programs/create", {"name": "Spring"}, Idempotency_Key=KEY)
    third = post_json(api, "promocodes/programs/create", {"name": "Spring"}, Idempotency_Key=KEY)
    assert not replayed(again) and envelope(again)["data"]["id"] != envelope(first)["data"]["id"]
    assert third.content == again.content and replayed(third)  # the new answer replaced the expired one


def test_answers_are_kept_for_the_configured_hours(database_url: str) -> None:
    with running(database_url, idempotency_hours=0) as api:
        first = post_json(api, "databases/create", {"name": "main"}, Idempotency_Key=KEY)
        again = post_json(api, "databases/create", {"name": "main"}, Idempotency_Key=KEY)
        assert not replayed(again) and envelope(again)["data"]["id"] != envelope(first)["data"]["id"]


def test_keys_are_scoped_to_the_account(api: Api) -> None:
    first = post_json(api, "databases/create", {"name": "main"}, Idempotency_Key=KEY)
    same_account = post_json(
        api, "databases/create", {"name": "main"}, token=api.token_for(Role.ADMIN), Idempotency_Key=KEY
    )
    other_account = post_json(
        api, "databases/create", {"name": "main"}, token=api.token_for(Role.ADMIN, "other"), Idempotency_Key=KEY
    )
    assert same_account.content == first.content and replayed(same_account)
    assert envelope(other_account)["error"] == 0 and not replayed(other_account)
    assert envelope(other_account)["data"]["id"] != envelope(first)["data"]["id"]


def test_a_large_import_is_replayed_whole(api: Api) -> None:
    """More items than the service reports on the event loop: the answer is made and replayed in threads."""
    loyalty_id = setup_program(api)
    codes = [f"BULK-{index:05d}" for index in range(10_001)]
    first = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": codes}, Idempotency_Key=KEY)
    again = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": codes}, Idempotency_Key=KEY)
    assert envelope(first)["inserted"] == 10_001
    assert again.content == first.content and replayed(again)


# --- one key, many clients at once --------------------------------------------------------------------------------


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serving(database_url, tmp_path / "server.log", workers=2) as server:
        yield server


@pytest.mark.slow
@pytest.mark.anyio
async def test_fifty_simultaneous_attaches_with_one_key_bind_one_code(live_server: LiveServer) -> None:
    async with live_server.client() as client:

        async def ok(method: str, **fields: Any) -> Any:
            body = (await client.post(f"/api/v1.1/{method}", json=fields)).json()
            assert body["error"] == 0, body
            return body["data"]

        loyalty_id = (await ok("promocodes/programs/create", name="Pool"))["id"]
        await ok("promocodes/import", loyalty_id=loyalty_id, codes=[f"POOL-{index:02d}" for index in range(60)])
        db_id = (await ok("databases/create", name="main"))["id"]
        await ok("profiles/import", db_id=db_id, email=ANN, data={})
        # Both workers open their connections first, so that the race starts on all of them at once.
        await asyncio.gather(*(ok("promocodes/programs/get", loyalty_id=loyalty_id) for _ in range(100)))

        attach = {"loyalty_id": loyalty_id, "db_id": db_id, "email": ANN}
        answers = await asyncio.gather(
            *(
                client.post("/api/v1.1/promocodes/attach", json=attach, headers={"Idempotency-Key": KEY})
                for _ in range(50)
            )
        )

        assert {answer.status_code for answer in answers} == {200}
        assert len({answer.content for answer in answers}) == 1
        assert json.loads(answers[0].content)["data"] == {"code": "POOL-00"}
        assert Counter(replayed(answer) for answer in answers) == {True: 49, False: 1}
        exported = await ok("promocodes/export_all", loyalty_id=loyalty_id)
        assert [item["code"] for item in exported if "attached" in item] == ["POOL-00"]


def test_a_large_import_is_kept_and_replayed(api: Api) -> None:
    """Past IN_THREAD_ITEMS the import's answer is made in a worker thread, inside the store's transaction too."""
    loyalty_id = setup_program(api)
    codes = [f"BULK-{index:05d}" for index in range(IN_THREAD_ITEMS + 1)]
    first = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": codes}, Idempotency_Key=KEY)
    assert envelope(first)["inserted"] == len(codes)
    again = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": codes}, Idempotency_Key=KEY)
    assert again.content == first.content and replayed(again)
