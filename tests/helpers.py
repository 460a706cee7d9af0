"""Helpers shared by the whole suite (fixtures live in ``conftest.py``; helpers are imported from here)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import httpx2
from starlette.applications import Starlette

from promocodes.domain.codes import code_key
from promocodes.domain.templates import Template
from promocodes.models import Actor, Match, MatchMode, Profile, Role
from promocodes.service import Services
from promocodes.store import Store, open_store, sqlite_path
from promocodes.store.profiles import ProfileData
from tests.client import InProcessClient

#: who the store tests act as: every store operation that changes a code names its actor (docs/api.md#history)
ACTOR = Actor(token_id=None, token_name="tests")

# `get`'s data keys in the documented order (docs/api.md#get); the last two only while the code is bound.
GET_KEYS = [
    "created",
    "is_attached",
    "is_activated",
    "is_expired",
    "attached",
    "activated",
    "expired",
    "expire_date",
    "loyalty_id",
    "code",
    "database_id",
    "profile_id",
]


def issue_token(database_url: str, account: str, role: Role) -> str:
    """A token for the account (created when missing), made through a separate connection."""

    async def issue() -> str:
        separate = open_store(database_url)
        await separate.open()
        try:
            await separate.migrate()
            view = await Services(separate).tokens.issue(account, role)
        finally:
            await separate.close()
        assert isinstance(view.token, str)
        return view.token

    return asyncio.run(issue())


def admin_token(client: InProcessClient, app: Starlette) -> str:
    """An admin token of account ``default`` (created when missing), issued by the application's own services on
    its loop: cheaper than opening a second connection to the database."""
    services: Services = app.state.services
    view = client.run(services.tokens.issue("default", Role.ADMIN))
    assert isinstance(view.token, str)
    return view.token


class Api:
    """A thin client for the API: ``api.call("promocodes/get", loyalty_id=1, code="A")`` → the parsed envelope."""

    def __init__(self, client: httpx2.Client, database_url: str, token: str) -> None:
        self.client = client
        self.database_url = database_url
        self.token = token

    def call(self, method: str, token: str | None = None, **fields: Any) -> dict[str, Any]:
        response = self.client.post(
            f"/api/v1.1/{method}", json=fields, headers={"Authorization": f"Bearer {token or self.token}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def ok(self, method: str, token: str | None = None, **fields: Any) -> Any:
        """Call, assert success, return ``data``."""
        body = self.call(method, token, **fields)
        assert body["error"] == 0, body
        return body["data"]

    def token_for(self, role: Role, account: str = "default") -> str:
        return issue_token(self.database_url, account, role)

    # Shortcuts for the setup most tests need.
    def program(self, token: str | None = None, **settings: Any) -> int:
        program_id: int = self.ok("promocodes/programs/create", token, name=settings.pop("name", "Test"), **settings)[
            "id"
        ]
        return program_id

    def codes(self, loyalty_id: int, *codes: str) -> None:
        data = self.ok("promocodes/import", loyalty_id=loyalty_id, codes=list(codes))
        assert all(item["error"] == 0 for item in data), data

    def database(self, name: str = "main", token: str | None = None) -> int:
        database_id: int = self.ok("databases/create", token, name=name)["id"]
        return database_id

    def profile(self, db_id: int, email: str, token: str | None = None, **data: Any) -> str:
        profile_id: str = self.ok("profiles/import", token, db_id=db_id, email=email, data=data)["profile_id"]
        return profile_id


async def save_profile(
    store: Store,
    database_id: int,
    profile_id: str,
    email: str | None,
    phones: Sequence[tuple[str, str]],
    fields: Mapping[str, Any],
    now: datetime,
) -> Profile:
    """Write a profile as told, for tests that set up data: the store's one profile write (``upsert_profile``),
    matching by ``profile_id``, so the profile is created when new and rewritten when it exists."""

    def build(found: list[Profile]) -> ProfileData:
        return ProfileData(profile_id=profile_id, email=email, phones=phones, fields=fields)

    return await store.upsert_profile(database_id, Match(MatchMode.PROFILE_ID, profile_id), build, now)


Draw = Callable[[int], tuple[list[str], list[str]]]


def drawing(template: str, case_sensitive: bool = True) -> Draw:
    """The ``draw`` that ``Store.generate_codes`` takes, as the service makes it: codes of the template, keyed."""
    parsed = Template(template)

    def draw(count: int) -> tuple[list[str], list[str]]:
        codes = parsed.generate_many(count)
        return codes, [code_key(code, case_sensitive) for code in codes]

    return draw


def scripted(batches: Iterable[Sequence[str]]) -> tuple[Draw, list[int]]:
    """A ``draw`` that answers with the given batches in turn (each cut to the size asked for), for tests that
    choose which draws collide; and the list of sizes it was asked for."""
    pending: Iterator[Sequence[str]] = iter(batches)
    asked: list[int] = []

    def draw(count: int) -> tuple[list[str], list[str]]:
        asked.append(count)
        codes = list(next(pending))[:count]
        return codes, list(codes)

    return draw, asked


async def count_rows(database_url: str, table: str) -> int:
    """How many rows a table holds, read through a connection of its own (for what no store operation shows, such
    as events that name no code)."""
    [row] = await sql_rows(database_url, f"SELECT count(*) AS n FROM {table}")
    count: int = row["n"]
    return count


async def sql_rows(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement through a connection of its own (``$n`` placeholders, as the store writes them) and return
    its rows as dicts: for what no store operation shows or sets, such as the webhook outbox's rows."""
    path = sqlite_path(database_url)
    if path is not None:
        raw = sqlite3.connect(path, isolation_level=None)
        raw.row_factory = sqlite3.Row
        try:
            rows = raw.execute(re.sub(r"\$(\d+)", r"?\1", query), args).fetchall()
        finally:
            raw.close()
        return [dict(row) for row in rows]
    conn = await asyncpg.connect(database_url)
    try:
        return [dict(row) for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()
