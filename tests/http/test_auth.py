"""Tokens, roles and accounts (docs/api.md#tokens, #roles): who may call what, and who may see whose objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from promocodes.models import Role
from tests.helpers import Api

FUTURE = "2999-01-01T00:00:00Z"


@dataclass
class World:
    """One account's objects: a program with a free and a bound code, a database with a profile holding the bound
    code and a profile holding nothing, a spare token to revoke and a webhook."""

    loyalty_id: int
    db_id: int
    profile_id: str
    spare_token_id: int
    webhook_id: int


def build_world(api: Api, token: str | None = None) -> World:
    loyalty_id = api.program(token)
    api.ok("promocodes/import", token, loyalty_id=loyalty_id, codes=["FREE-1", "BOUND-1"])
    db_id = api.database(token=token)
    profile_id = api.profile(db_id, "ann@example.org", token)
    api.profile(db_id, "idle@example.org", token)
    api.ok("promocodes/attach", token, loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code="BOUND-1")
    spare = api.ok("tokens/create", token, role="read", name="spare")
    webhook = api.ok("webhooks/create", token, url="http://127.0.0.1:9/hooks", events=["code.activated"])
    return World(loyalty_id, db_id, profile_id, spare["id"], webhook["id"])


def state(api: Api, world: World, token: str | None = None) -> dict[str, Any]:
    """Everything an admin of the account can see, to prove that a refused call changed nothing."""
    return {
        "codes": [
            api.ok("promocodes/get", token, loyalty_id=world.loyalty_id, code=code) for code in ("FREE-1", "BOUND-1")
        ],
        "export": api.ok("promocodes/export_all", token, loyalty_id=world.loyalty_id),
        "programs": api.ok("promocodes/programs/list", token),
        "databases": api.ok("databases/list", token),
        "profiles": [
            api.ok("profiles/get", token, db_id=world.db_id, email=email)
            for email in ("ann@example.org", "idle@example.org")
        ],
        "tokens": api.ok("tokens/list", token),
        "webhooks": api.ok("webhooks/list", token),
    }


Call = Callable[[World], tuple[str, dict[str, Any]]]

# Every method with a request that succeeds for a role allowed to make it.
CALLS: dict[str, Call] = {
    "get": lambda w: ("promocodes/get", {"loyalty_id": w.loyalty_id, "code": "FREE-1"}),
    "export_all": lambda w: ("promocodes/export_all", {"loyalty_id": w.loyalty_id}),
    "history": lambda w: ("promocodes/history", {"loyalty_id": w.loyalty_id, "code": "BOUND-1"}),
    "programs/list": lambda w: ("promocodes/programs/list", {}),
    "programs/get": lambda w: ("promocodes/programs/get", {"loyalty_id": w.loyalty_id}),
    "databases/list": lambda w: ("databases/list", {}),
    "profiles/get": lambda w: ("profiles/get", {"db_id": w.db_id, "email": "ann@example.org"}),
    "import": lambda w: ("promocodes/import", {"loyalty_id": w.loyalty_id, "codes": ["NEW-1"]}),
    "activate": lambda w: ("promocodes/activate", {"loyalty_id": w.loyalty_id, "code": "BOUND-1"}),
    "attach": lambda w: (
        "promocodes/attach",
        {"loyalty_id": w.loyalty_id, "db_id": w.db_id, "email": "idle@example.org", "code": "FREE-1"},
    ),
    "update": lambda w: ("promocodes/update", {"loyalty_id": w.loyalty_id, "code": "FREE-1", "expire_date": FUTURE}),
    "detach": lambda w: (
        "promocodes/detach",
        {"loyalty_id": w.loyalty_id, "db_id": w.db_id, "email": "ann@example.org", "code": "BOUND-1"},
    ),
    "profiles/import": lambda w: ("profiles/import", {"db_id": w.db_id, "email": "new@example.org", "data": {}}),
    "profiles/delete": lambda w: ("profiles/delete", {"db_id": w.db_id, "email": "idle@example.org"}),
    "programs/create": lambda w: ("promocodes/programs/create", {"name": "Another"}),
    "programs/update": lambda w: ("promocodes/programs/update", {"loyalty_id": w.loyalty_id, "name": "Renamed"}),
    "programs/delete": lambda w: ("promocodes/programs/delete", {"loyalty_id": w.loyalty_id, "force": True}),
    "databases/create": lambda w: ("databases/create", {"name": "second"}),
    "tokens/create": lambda w: ("tokens/create", {"role": "read"}),
    "tokens/list": lambda w: ("tokens/list", {}),
    "tokens/revoke": lambda w: ("tokens/revoke", {"id": w.spare_token_id}),
    "webhooks/create": lambda w: (
        "webhooks/create",
        {"url": "https://shop.example/hooks", "events": ["code.attached"]},
    ),
    "webhooks/list": lambda w: ("webhooks/list", {}),
    "webhooks/update": lambda w: ("webhooks/update", {"id": w.webhook_id, "active": False}),
    "webhooks/delete": lambda w: ("webhooks/delete", {"id": w.webhook_id}),
    "webhooks/deliveries": lambda w: ("webhooks/deliveries", {"id": w.webhook_id}),
}
READ_ONLY = {"get", "export_all", "history", "programs/list", "programs/get", "databases/list", "profiles/get"}
CODE_AND_PROFILE_WRITES = {"import", "activate", "attach", "update", "detach", "profiles/import", "profiles/delete"}
ALLOWED = {
    Role.READ: READ_ONLY,
    Role.WRITE: READ_ONLY | CODE_AND_PROFILE_WRITES,
    Role.ADMIN: set(CALLS),
}
MATRIX = [(role, name) for role in Role for name in CALLS]


# --- 401 -------------------------------------------------------------------------------------------------------


def _anonymous(api: Api, method: str, **fields: Any) -> dict[str, Any]:
    response = api.client.post(f"/api/v1.1/{method}", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("name", ["get", "import", "programs/list", "tokens/list"])
def test_a_missing_token_is_401(api: Api, name: str) -> None:
    world = build_world(api)
    before = state(api, world)
    method, fields = CALLS[name](world)
    body = _anonymous(api, method, **fields)
    assert (body["error"], body["data"]) == (401, None), body
    empty = _anonymous(api, method, token="", **fields)
    assert empty["error"] == 401, empty
    assert state(api, world) == before


@pytest.mark.parametrize("token", ["pc_unknown", "x", "Bearer"])
def test_an_unknown_token_is_401(api: Api, token: str) -> None:
    world = build_world(api)
    before = state(api, world)
    method, fields = CALLS["import"](world)
    assert api.call(method, token, **fields)["error"] == 401
    assert _anonymous(api, method, token=token, **fields)["error"] == 401
    assert state(api, world) == before


def test_a_revoked_token_is_401(api: Api) -> None:
    created = api.ok("tokens/create", role="write", name="shop")
    assert api.ok("promocodes/programs/list", created["token"]) == []
    revoked = api.ok("tokens/revoke", id=created["id"])
    assert revoked["revoked"] != ""
    assert api.call("promocodes/programs/list", created["token"])["error"] == 401
    assert _anonymous(api, "promocodes/programs/list", token=created["token"])["error"] == 401


def test_revoking_one_token_leaves_the_others_working(api: Api) -> None:
    first = api.ok("tokens/create", role="read")
    second = api.ok("tokens/create", role="read")
    api.ok("tokens/revoke", id=first["id"])
    assert api.ok("promocodes/programs/list", second["token"]) == []
    assert api.ok("promocodes/programs/list") == []  # the admin token that revoked


# --- roles (403) -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "name"), MATRIX, ids=[f"{role.value}-{name}" for role, name in MATRIX])
def test_roles(api: Api, role: Role, name: str) -> None:
    world = build_world(api)
    token = api.token_for(role)
    method, fields = CALLS[name](world)
    if name in ALLOWED[role]:
        body = api.call(method, token, **fields)
        assert body["error"] == 0, body
        if name == "import":
            assert body["inserted"] == 1, body
    else:
        before = state(api, world)
        body = api.call(method, token, **fields)
        assert (body["error"], body["data"]) == (403, None), body
        assert state(api, world) == before


def test_read_may_not_write_even_what_it_reads(api: Api) -> None:
    """`read` sees a code but the same code refuses every change; the refusal names the role."""
    world = build_world(api)
    reader = api.token_for(Role.READ)
    assert api.ok("promocodes/get", reader, loyalty_id=world.loyalty_id, code="BOUND-1")["is_attached"] is True
    body = api.call("promocodes/activate", reader, loyalty_id=world.loyalty_id, code="BOUND-1")
    assert body["error"] == 403 and "read" in body["error_text"], body
    assert api.ok("promocodes/get", loyalty_id=world.loyalty_id, code="BOUND-1")["is_activated"] is False


def test_a_created_token_has_the_role_it_was_given(api: Api) -> None:
    writer = api.ok("tokens/create", role="write")["token"]
    loyalty_id = api.program()
    assert api.ok("promocodes/import", writer, loyalty_id=loyalty_id, codes=["W-1"])[0]["error"] == 0
    assert api.call("promocodes/programs/create", writer, name="Nope")["error"] == 403
    assert api.call("tokens/create", writer, role="admin")["error"] == 403


# --- accounts --------------------------------------------------------------------------------------------------


@pytest.fixture
def foreign(api: Api) -> tuple[World, str]:
    """Account `default`'s world, and an admin token of account `other`, which holds objects of its own."""
    world = build_world(api)
    other = api.token_for(Role.ADMIN, account="other")
    build_world(api, other)
    return world, other


def _missing_id(api: Api, token: str) -> int:
    """An id no object of any kind has yet: larger than every program and database id of both accounts."""
    ids = [p["id"] for p in api.ok("promocodes/programs/list")] + [d["id"] for d in api.ok("databases/list")]
    ids += [p["id"] for p in api.ok("promocodes/programs/list", token)] + [
        d["id"] for d in api.ok("databases/list", token)
    ]
    return max(ids) + 1000


PROGRAM_CALLS = [
    "get",
    "export_all",
    "programs/get",
    "import",
    "activate",
    "update",
    "programs/update",
    "programs/delete",
]


@pytest.mark.parametrize("name", PROGRAM_CALLS)
def test_another_accounts_program_is_404_like_a_missing_one(api: Api, foreign: tuple[World, str], name: str) -> None:
    world, other = foreign
    before = state(api, world)
    method, fields = CALLS[name](world)
    seen = api.call(method, other, **fields)
    missing_id = _missing_id(api, other)
    missing = api.call(method, other, **{**fields, "loyalty_id": missing_id})
    assert missing["error"] == 404, missing
    assert seen == {**missing, "error_text": missing["error_text"].replace(str(missing_id), str(world.loyalty_id))}
    assert state(api, world) == before


@pytest.mark.parametrize("name", ["attach", "detach"])
def test_attach_and_detach_in_another_accounts_program_are_404(api: Api, foreign: tuple[World, str], name: str) -> None:
    world, other = foreign
    before = state(api, world)
    own_db = api.ok("databases/list", other)[0]["id"]
    method, fields = CALLS[name](world)
    seen = api.call(method, other, **{**fields, "db_id": own_db})
    assert (seen["error"], seen["error_text"]) == (404, f"Program {world.loyalty_id} not found"), seen
    assert state(api, world) == before


@pytest.mark.parametrize("name", ["profiles/get", "profiles/import", "profiles/delete", "attach"])
def test_another_accounts_database_is_404_like_a_missing_one(api: Api, foreign: tuple[World, str], name: str) -> None:
    world, other = foreign
    before = state(api, world)
    own_program = api.ok("promocodes/programs/list", other)[0]["id"]
    method, fields = CALLS[name](world)
    fields = {**fields, "loyalty_id": own_program} if "loyalty_id" in fields else fields
    seen = api.call(method, other, **fields)
    missing_id = _missing_id(api, other)
    missing = api.call(method, other, **{**fields, "db_id": missing_id})
    assert missing["error"] == 404 and "Database" in missing["error_text"], missing
    assert seen == {**missing, "error_text": missing["error_text"].replace(str(missing_id), str(world.db_id))}
    assert state(api, world) == before


def test_another_accounts_profile_id_is_not_found(api: Api, foreign: tuple[World, str]) -> None:
    world, other = foreign
    own_db = api.ok("databases/list", other)[0]["id"]
    seen = api.call("profiles/get", other, db_id=own_db, profile_id=world.profile_id)
    assert seen["error"] == 404 and "Profile not found" in seen["error_text"], seen


def test_another_accounts_token_cannot_be_revoked(api: Api, foreign: tuple[World, str]) -> None:
    world, other = foreign
    seen = api.call("tokens/revoke", other, id=world.spare_token_id)
    assert (seen["error"], seen["error_text"]) == (404, f"Token {world.spare_token_id} not found"), seen
    assert [t["revoked"] for t in api.ok("tokens/list") if t["id"] == world.spare_token_id] == [""]


LISTS = {"programs": "promocodes/programs/list", "databases": "databases/list", "tokens": "tokens/list"}


def test_lists_show_only_the_callers_objects(api: Api, foreign: tuple[World, str]) -> None:
    world, other = foreign
    mine = {name: api.ok(method) for name, method in LISTS.items()}
    theirs = {name: api.ok(method, other) for name, method in LISTS.items()}
    assert [p["id"] for p in mine["programs"]] == [world.loyalty_id]
    assert [d["id"] for d in mine["databases"]] == [world.db_id]
    for name in LISTS:
        assert mine[name] and theirs[name], name
        assert not {item["id"] for item in mine[name]} & {item["id"] for item in theirs[name]}, name


def test_tokens_list_never_shows_token_values(api: Api) -> None:
    created = api.ok("tokens/create", role="write", name="shop")
    assert created["token"] and set(created) >= {"id", "token", "role", "name"}
    response = api.client.post(
        "/api/v1.1/tokens/list", json={"format": "xml"}, headers={"Authorization": f"Bearer {api.token}"}
    )
    listed = api.ok("tokens/list")
    assert {t["id"] for t in listed} >= {created["id"]}
    assert all("token" not in item for item in listed)
    for value in (created["token"], api.token):
        assert value not in response.text
        assert value not in str(listed)


@pytest.mark.parametrize("name", ["webhooks/update", "webhooks/delete", "webhooks/deliveries"])
def test_another_accounts_webhook_is_404_like_a_missing_one(api: Api, foreign: tuple[World, str], name: str) -> None:
    world, other = foreign
    before = state(api, world)
    method, fields = CALLS[name](world)
    seen = api.call(method, other, **fields)
    assert (seen["error"], seen["error_text"]) == (404, f"Webhook {world.webhook_id} not found"), seen
    missing = api.call(method, other, **{**fields, "id": world.webhook_id + 1000})
    assert missing["error"] == 404 and missing["error_text"] == f"Webhook {world.webhook_id + 1000} not found"
    assert state(api, world) == before
