"""Database timeouts (every operation answers within its time: 503, never a hang), reads beside a long write on
SQLite, and 503 texts without driver messages.

PostgreSQL is made to stop answering through a TCP proxy that freezes: it holds every byte and keeps every socket
open, which is what a server stopped with SIGSTOP looks like from the client. Nothing here measures speed: each
test waits on events and outcomes, with a generous hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from promocodes.config import Settings
from promocodes.errors import StorageUnavailable
from promocodes.http.app import create_app
from promocodes.models import Role
from promocodes.store import Store, open_store, sqlite_path
from promocodes.store.base import Connection
from promocodes.store.sqlite import SqliteStore
from tests.client import InProcessClient
from tests.helpers import ACTOR, issue_token
from tests.proxy import FreezingProxy

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
TIMEOUT = 0.5  # the store's timeout in these tests: short, so that a 503 comes quickly
PLAIN_TEXTS = {"The database did not answer in time; retry later", "The database is unavailable; retry later"}
DRIVER_WORDS = ("PostgreSQL:", "SQLite:", "DETAIL", "errno", "savepoint", "Errno", "locked")
# Waits that must end: generous, they only turn a hang into a failure.
HANG_GUARD = 20


def assert_plain(error: StorageUnavailable) -> None:
    assert error.text in PLAIN_TEXTS, error.text
    assert not any(word in error.text for word in DRIVER_WORDS), error.text


@pytest.fixture
async def proxied(proxy: FreezingProxy, postgres_url: str) -> AsyncIterator[Store]:
    """A store reaching the (already migrated) test database through the proxy, with a short timeout."""
    store = open_store(proxy.url(postgres_url), pool_size=2, timeout=TIMEOUT)
    await store.open()
    try:
        yield store
    finally:
        proxy.thaw()
        await store.close()


# --- PostgreSQL: a server that stops answering -----------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_frozen_postgres_answers_503_and_recovers_when_it_answers_again(
    proxied: Store, proxy: FreezingProxy
) -> None:
    # Two connections in the pool: one busy when the server froze, one idle.
    await asyncio.gather(proxied.count_tokens(), proxied.count_tokens())
    proxy.freeze()
    for attempt in (proxied.count_tokens, lambda: proxied.ensure_account("frozen", NOW)):  # a read, a write
        with pytest.raises(StorageUnavailable) as caught:
            await asyncio.wait_for(attempt(), HANG_GUARD)
        assert_plain(caught.value)
    proxy.thaw()
    assert await proxied.count_tokens() >= 0
    assert await proxied.ensure_account("thawed", NOW) > 0


@pytest.mark.timeout(30)
async def test_closing_the_pool_does_not_hang_on_a_frozen_postgres(proxy: FreezingProxy, postgres_url: str) -> None:
    store = open_store(proxy.url(postgres_url), pool_size=2, timeout=TIMEOUT)
    await store.open()
    await asyncio.gather(store.count_tokens(), store.count_tokens())  # idle connections to say goodbye to
    proxy.freeze()
    await asyncio.wait_for(store.close(), HANG_GUARD)


@pytest.mark.timeout(30)
async def test_opening_on_a_frozen_postgres_is_a_503(proxy: FreezingProxy, postgres_url: str) -> None:
    store = open_store(proxy.url(postgres_url), timeout=TIMEOUT)
    proxy.freeze()
    with pytest.raises(StorageUnavailable) as caught:
        await asyncio.wait_for(store.open(), HANG_GUARD)
    assert_plain(caught.value)


@pytest.mark.timeout(60)
def test_a_frozen_postgres_is_http_503_then_served_again(proxy: FreezingProxy, postgres_url: str) -> None:
    token = issue_token(postgres_url, "default", Role.ADMIN)
    app = create_app(Settings(database_url=proxy.url(postgres_url), db_timeout=TIMEOUT), migrate=True)
    headers = {"Authorization": f"Bearer {token}"}
    with InProcessClient(app) as client:
        assert client.post("/api/v1.1/promocodes/programs/list", json={}, headers=headers).json()["error"] == 0
        proxy.freeze()
        frozen = client.post("/api/v1.1/promocodes/programs/list", json={}, headers=headers)
        assert frozen.status_code == 503, frozen.text
        body = frozen.json()
        assert body["error"] == 503 and body["data"] is None
        assert body["error_text"] in PLAIN_TEXTS
        proxy.thaw()
        assert client.post("/api/v1.1/promocodes/programs/list", json={}, headers=headers).json()["error"] == 0


@pytest.mark.timeout(30)
async def test_a_cut_connection_is_a_plain_503_with_the_driver_message_in_the_log(
    proxy: FreezingProxy, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(proxy.url(postgres_url), timeout=TIMEOUT)
    await store.open()
    try:
        await store.count_tokens()
        proxy.close()  # the open connection breaks, new ones are refused
        for _ in range(2):  # the broken connection, then a refused one
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="promocodes"), pytest.raises(StorageUnavailable) as caught:
                await asyncio.wait_for(store.count_tokens(), HANG_GUARD)
            assert_plain(caught.value)
            # The driver's own words are kept, with their type, for whoever reads the log.
            cause = caught.value.__cause__
            assert cause is not None
            ours = [record for record in caplog.records if record.name == "promocodes"]
            assert [(record.levelno, record.getMessage()) for record in ours] == [
                (logging.WARNING, f"The database is unavailable: {type(cause).__name__}: {cause}")
            ]
    finally:
        await store.close()


# --- PostgreSQL: a row another transaction holds ---------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.timeout(30)
async def test_a_write_waiting_for_a_postgres_row_lock_is_a_503_and_the_pool_goes_on(database_url: str) -> None:
    store = open_store(database_url, pool_size=1, timeout=TIMEOUT)  # one connection: it must come back usable
    await store.open()
    holder = await asyncpg.connect(database_url)
    try:
        account_id = await store.ensure_account("acme", NOW)
        program = await store.create_program(account_id, {"name": "P"}, NOW)
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM programs WHERE id = $1 FOR UPDATE", program.id)
            # An import takes the program row first (to count against its limit): it waits, then gives up.
            with pytest.raises(StorageUnavailable) as caught:
                await asyncio.wait_for(
                    store.import_codes(program.id, [("LOCKED", "LOCKED")], NOW, actor=ACTOR), HANG_GUARD
                )
            assert_plain(caught.value)
            # Reads of the same program are not held up by the lock.
            assert await store.get_program(account_id, program.id) == program
        # Released: the same (single) pooled connection slot serves the next write, and the refused one left
        # nothing behind (its transaction was rolled back).
        outcome = await store.import_codes(program.id, [("AFTER", "AFTER")], NOW, actor=ACTOR)
        assert outcome.inserted == {"AFTER"}
        assert await store.code_state(program.id, "LOCKED") is None
    finally:
        await holder.close()
        await store.close()


# --- SQLite: another process holding the write lock, and reads beside a long write -----------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/promocodes.db", timeout=TIMEOUT)
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def write_lock_held(store: Store) -> Iterator[None]:
    """Another connection to the file (think: another process) holding SQLite's write lock."""
    assert isinstance(store, SqliteStore)
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.mark.timeout(30)
async def test_a_write_waiting_for_the_sqlite_write_lock_is_a_503_while_reads_answer(sqlite_store: Store) -> None:
    store = sqlite_store
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "P"}, NOW)
    await store.import_codes(program.id, [("OLD", "OLD")], NOW, actor=ACTOR)
    with write_lock_held(store):
        with pytest.raises(StorageUnavailable) as caught:
            await asyncio.wait_for(store.import_codes(program.id, [("NEW", "NEW")], NOW, actor=ACTOR), HANG_GUARD)
        assert_plain(caught.value)
        state = await asyncio.wait_for(store.code_state(program.id, "OLD"), HANG_GUARD)
        assert state is not None and state.code == "OLD"
        assert await asyncio.wait_for(store.get_program(account_id, program.id), HANG_GUARD) == program
    # The lock is gone: writes go through again.
    assert (await store.import_codes(program.id, [("NEW", "NEW")], NOW, actor=ACTOR)).inserted == {"NEW"}


@pytest.mark.timeout(30)
async def test_sqlite_lock_failure_is_a_plain_503_with_the_driver_message_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A bulk import is allowed more time than busy_timeout (its rows add to it), so it hears SQLite's own
    # "database is locked" rather than its deadline: that message must reach the log, not the client.
    store = open_store(f"sqlite:///{tmp_path}/promocodes.db", timeout=0.2)
    await store.open()
    await store.migrate()
    try:
        account_id = await store.ensure_account("acme", NOW)
        program = await store.create_program(account_id, {"name": "P"}, NOW)
        rows = [(f"C{index}", f"C{index}") for index in range(100_000)]  # 10 s more than busy_timeout
        with (
            caplog.at_level(logging.WARNING, logger="promocodes"),
            write_lock_held(store),
            pytest.raises(StorageUnavailable) as caught,
        ):
            await asyncio.wait_for(store.import_codes(program.id, rows, NOW, actor=ACTOR), HANG_GUARD)
        assert caught.value.text == "The database is unavailable; retry later"
        assert any("OperationalError: database is locked" in record.getMessage() for record in caplog.records)
    finally:
        await store.close()


async def _hold_the_writer(store: Store, started: threading.Event, release: threading.Event) -> None:
    """An operation that keeps the SQLite writer (and its write transaction) busy until ``release`` is set."""

    async def hold(conn: Connection) -> None:
        await conn.fetchval("INSERT INTO accounts (name, created) VALUES ('holding', 0) RETURNING id")
        started.set()
        release.wait(HANG_GUARD)  # blocks the writer thread, as a long import does

    with contextlib.suppress(StorageUnavailable):  # its caller may give up; the work goes on until released
        await store._run(hold)


@pytest.mark.timeout(30)
async def test_sqlite_reads_answer_while_the_writer_is_busy(sqlite_store: Store) -> None:
    store = sqlite_store
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "P"}, NOW)
    await store.import_codes(program.id, [("A", "A")], NOW, actor=ACTOR)
    started, release = threading.Event(), threading.Event()
    holding = asyncio.create_task(_hold_the_writer(store, started, release))
    try:
        assert await asyncio.to_thread(started.wait, HANG_GUARD)
        # The writer is inside a write transaction that will not end before these reads do.
        state = await asyncio.wait_for(store.code_state(program.id, "A"), HANG_GUARD)
        assert state is not None and state.code == "A"
        assert await asyncio.wait_for(store.get_program(account_id, program.id), HANG_GUARD) == program
        assert await asyncio.wait_for(store.find_account("holding"), HANG_GUARD) is None  # not committed yet
        assert not release.is_set()
    finally:
        release.set()
        await holding


@pytest.mark.timeout(30)
async def test_a_sqlite_write_abandoned_while_queued_never_runs(sqlite_store: Store) -> None:
    store = sqlite_store
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "P"}, NOW)
    started, release = threading.Event(), threading.Event()
    holding = asyncio.create_task(_hold_the_writer(store, started, release))
    try:
        assert await asyncio.to_thread(started.wait, HANG_GUARD)
        with pytest.raises(StorageUnavailable) as caught:  # queued behind the writer until its time ran out
            await asyncio.wait_for(store.import_codes(program.id, [("LATE", "LATE")], NOW, actor=ACTOR), HANG_GUARD)
        assert_plain(caught.value)
    finally:
        release.set()
        await holding
    # The writer is free again; a write queued after the abandoned one has been answered, so the abandoned one
    # would have run by now had it been going to.
    assert (await store.import_codes(program.id, [("NEXT", "NEXT")], NOW, actor=ACTOR)).inserted == {"NEXT"}
    assert await store.code_state(program.id, "LATE") is None
    assert await store.find_account("holding") is not None  # the started one finished and committed


async def test_an_in_memory_sqlite_store_reads_what_it_wrote() -> None:
    # One connection holds an in-memory database: reads must not go to connections of their own.
    store = open_store("sqlite:///:memory:", timeout=TIMEOUT)
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    await store.open()
    await store.migrate()
    try:
        account_id = await store.ensure_account("acme", NOW)
        program = await store.create_program(account_id, {"name": "P"}, NOW)
        await store.import_codes(program.id, [("A", "A")], NOW, actor=ACTOR)
        assert await store.find_account("acme") == account_id
        state = await store.code_state(program.id, "A")
        assert state is not None and state.code == "A"
    finally:
        await store.close()
