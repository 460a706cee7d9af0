"""The databases a run uses and the data it seeds.

Each run gets fresh databases: a SQLite file in a temporary folder, and a PostgreSQL database created for the run
and dropped at its end (``bench_<random>`` on the server ``PROMOCODES_BENCH_POSTGRES`` names, by default the local
one). ``--database-url`` names one database instead, which the run migrates and seeds, and never drops.

The seed is written with set-based SQL (a generated series of codes, profiles and bindings) rather than through
the API: seeding a hundred thousand attached codes one request at a time would take longer than the benchmark.
The tables and the rows are the ones the server's own paths would have written, minus the history of the seed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.statements import to_sqlite
from promocodes.domain.times import to_micros, utcnow
from promocodes.models import Role
from promocodes.service import Services
from promocodes.store import open_store

PG_ADMIN = os.environ.get("PROMOCODES_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def adapter_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


@contextmanager
def fresh(adapter: str) -> Iterator[str]:
    """A URL of an empty database of ``adapter`` for the length of the block, removed afterwards."""
    if adapter == "sqlite":
        with tempfile.TemporaryDirectory(prefix="promocodes-bench-") as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rpartition("/")[0] + "/" + name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def execute(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """One statement (``$n`` placeholders) on its own connection, committed; its rows."""
    if adapter_of(url) == "sqlite":
        with closing(sqlite3.connect(sqlite_path(url), timeout=30)) as conn, conn:  # closed, and committed
            return [tuple(row) for row in conn.execute(to_sqlite(sql), args).fetchall()]

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


@dataclass
class Seed:
    """What the request workloads need: an admin token, the program of attached codes (``R000000001``…, all bound
    to one profile) and the profile database of ``profiles`` profiles (ids ``000…001``…, 24 digits)."""

    token: str
    account_id: int
    redeem_program: int
    attached_codes: int
    database_id: int
    profiles: int


def series(adapter: str, count_param: str) -> str:
    """A row source ``n`` = 1..count: PostgreSQL's generate_series, a recursive CTE on SQLite."""
    if adapter == "postgres":
        return f"generate_series(1, {count_param}) AS s(n)"
    return f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {count_param}) SELECT n FROM s)"


def padded(adapter: str, prefix: str, width: int, number: str = "n") -> str:
    """SQL for ``prefix`` followed by ``number`` zero-padded to ``width`` digits (as Python's ``f"{n:0{width}d}"``)."""
    if adapter == "postgres":
        return f"'{prefix}' || lpad(({number})::text, {width}, '0')"
    return f"printf('{prefix}%0{width}d', {number})"


def code_name(n: int) -> str:
    return f"R{n:09d}"


def profile_name(n: int) -> str:
    return f"{n:024d}"


async def _setup(url: str) -> tuple[str, int, int, int]:
    store = open_store(url, timeout=60.0)
    await store.open()
    try:
        await store.migrate()
        token = await Services(store).tokens.issue("bench", Role.ADMIN)
        assert isinstance(token.token, str)
        account_id = await store.ensure_account("bench", utcnow())
        program = await store.create_program(account_id, {"name": "redeem"}, utcnow())
        database = await store.create_database(account_id, "bench", utcnow())
        return token.token, account_id, program.id, database.id
    finally:
        await store.close()


def create_program(url: str, account_id: int, name: str) -> int:
    async def run() -> int:
        store = open_store(url, timeout=60.0)
        await store.open()
        try:
            return (await store.create_program(account_id, {"name": name}, utcnow())).id
        finally:
            await store.close()

    return asyncio.run(run())


def seed(url: str, attached_codes: int, profiles: int) -> Seed:
    """Migrate, then seed: a token, ``attached_codes`` codes bound to profile 1, ``profiles`` profiles."""
    token, account_id, program_id, database_id = asyncio.run(_setup(url))
    adapter = adapter_of(url)
    now = to_micros(utcnow())
    statements = [
        (
            "INSERT INTO profiles (database_id, profile_id, created, updated) "
            f"SELECT $1, {padded(adapter, '', 24)}, $2, $2 FROM {series(adapter, '$3')}",
            (database_id, now, profiles),
        ),
        (
            "INSERT INTO codes (program_id, code, code_key, created, attached_count) "
            f"SELECT $1, {padded(adapter, 'R', 9)}, {padded(adapter, 'R', 9)}, $2, 1 FROM {series(adapter, '$3')}",
            (program_id, now, attached_codes),
        ),
        (
            "INSERT INTO code_bindings (code_id, profile_pk, attached) "
            "SELECT id, (SELECT min(id) FROM profiles), $2 FROM codes WHERE program_id = $1",
            (program_id, now),
        ),
        ("UPDATE programs SET code_count = $2 WHERE id = $1", (program_id, attached_codes)),
    ]
    for sql, args in statements:
        execute(url, sql, *args)
    if adapter == "postgres":
        execute(url, "ANALYZE")  # fresh statistics, as a long-running database would have
    return Seed(token, account_id, program_id, attached_codes, database_id, profiles)
