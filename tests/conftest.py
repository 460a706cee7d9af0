"""Fixtures shared by the whole suite.

Every test that takes ``database_url`` (directly or through ``store`` or ``api``) runs twice: on SQLite (a fresh
file per test) and on PostgreSQL (one database created for the session, emptied before each test, dropped at the
end). PostgreSQL is found through ``PROMOCODES_TEST_POSTGRES`` (default: the local server, user postgres). When it
cannot be reached, its tests are skipped with a message — except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from promocodes.config import Settings
from promocodes.http.app import create_app
from promocodes.store import Store, open_store
from tests.client import InProcessClient
from tests.helpers import Api, admin_token
from tests.proxy import FreezingProxy

POSTGRES_ADMIN_URL = os.environ.get("PROMOCODES_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgres")
# Children before parents, so that plain DELETEs empty them in order.
_TABLES = (
    "program_days",
    "webhook_lease",
    "webhook_deliveries",
    "webhook_events",
    "webhooks",
    "idempotency_keys",
    "code_events",
    "code_bindings",
    "codes",
    "profile_fields",
    "profile_phones",
    "profiles",
    "databases",
    "programs",
    "tokens",
    "accounts",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (live servers, fuzzers) first: the parallel workers take tests in order, and one that starts
    last would keep its worker busy long after the others ran out of tests."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated once, dropped at the end."""
    name = f"promocodes_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            # A commit need not wait for its WAL flush here: the tests never crash the server, and the flush is
            # about a millisecond per commit that tells them nothing (durability is PostgreSQL's, not ours).
            await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        finally:
            await admin.close()
        store = open_store(_database_url(POSTGRES_ADMIN_URL, name))
        await store.open()
        await store.migrate()
        await store.close()

    async def drop() -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as error:
        message = f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL} ({error}); PostgreSQL tests need it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message + " — skipped outside CI")
    yield _database_url(POSTGRES_ADMIN_URL, name)
    asyncio.run(drop())


class PostgresEmptier:
    """Empties the session's PostgreSQL database before each test: every table, and the ids restarted, as a fresh
    database would have them. DELETE, not TRUNCATE: on tables this small DELETE takes a few milliseconds where
    TRUNCATE takes a few hundred (it replaces every table's files).

    It runs before each of about a thousand tests, so it keeps one connection (on a loop of its own, run only while
    it empties) and builds its statement once; a connection some test cut (a frozen or killed server) is opened
    again."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._runner = asyncio.Runner()
        self._conn: asyncpg.Connection | None = None
        self._statement: str | None = None

    def empty(self) -> None:
        self._runner.run(self._empty())

    def close(self) -> None:
        try:
            if self._conn is not None:
                self._runner.run(self._conn.close(timeout=5))
        finally:
            self._runner.close()

    async def _empty(self) -> None:
        for attempt in range(2):
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.url, timeout=5)
                if self._statement is None:
                    self._statement = await self._build(self._conn)
                await self._conn.execute(self._statement, timeout=30)
                return
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                self._conn = None
                if attempt:
                    raise

    @staticmethod
    async def _build(conn: asyncpg.Connection) -> str:
        tables = {
            row["tablename"] for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        } - {"schema_migrations"}
        assert tables == set(_TABLES), f"tests/conftest.py must empty every table; it lists {_TABLES}, has {tables}"
        sequences = [
            row["seq"]
            for row in await conn.fetch(
                "SELECT pg_get_serial_sequence(table_name, 'id') AS seq FROM information_schema.columns "
                "WHERE table_schema = 'public' AND column_name = 'id'"
            )
            if row["seq"]
        ]
        return "; ".join(
            [*(f"DELETE FROM {table}" for table in _TABLES), *(f"ALTER SEQUENCE {s} RESTART" for s in sequences)]
        )


@pytest.fixture(scope="session")
def postgres_emptier(postgres_url: str) -> Iterator[PostgresEmptier]:
    emptier = PostgresEmptier(postgres_url)
    try:
        yield emptier
    finally:
        emptier.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per test process: copying it is a millisecond, migrating a new file tens."""
    path = tmp_path_factory.mktemp("template") / "promocodes.db"  # copied into sqlite_folder by each test

    async def migrate() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()  # the last connection to close folds the WAL back into the file

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def sqlite_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the tests' SQLite files go: a folder in memory (``/dev/shm``) when the machine has one, because every
    commit fsyncs (``synchronous=FULL``) and a disk makes each one wait about a millisecond that tells the tests
    nothing. Removed at the end of the session."""
    shared_memory = Path("/dev/shm")
    if not (shared_memory.is_dir() and os.access(shared_memory, os.W_OK)):
        yield tmp_path_factory.mktemp("sqlite")
        return
    folder = Path(tempfile.mkdtemp(prefix="promocodes-tests-", dir=shared_memory))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, sqlite_folder: Path) -> Iterator[str]:
    """A migrated database of each adapter, holding nothing: a copy of the migrated SQLite template (removed
    after the test), or the emptied PostgreSQL database."""
    if request.param == "sqlite":
        copy = Path(tempfile.mkdtemp(dir=sqlite_folder)) / "promocodes.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), copy)
        yield f"sqlite:///{copy}"
        shutil.rmtree(copy.parent, ignore_errors=True)
        return
    emptier: PostgresEmptier = request.getfixturevalue("postgres_emptier")
    emptier.empty()
    yield emptier.url


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[FreezingProxy]:
    """A TCP forwarder to the test PostgreSQL that a test can freeze, thaw or cut (``tests/proxy.py``)."""
    parts = urlsplit(postgres_url)
    forwarder = FreezingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        yield forwarder
    finally:
        forwarder.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open, migrated store of each adapter (use in ``@pytest.mark.anyio`` tests)."""
    opened = open_store(database_url)
    await opened.open()  # database_url is migrated already
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def app_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_body_bytes=1024 * 1024)


@pytest.fixture
def api(app_settings: Settings) -> Iterator[Api]:
    """The whole application in-process (``tests/client.py``), with an admin token of account ``default``."""
    app = create_app(app_settings)  # database_url is migrated already: checking again costs each test 10-20 ms
    with InProcessClient(app) as client:
        yield Api(client, app_settings.database_url, admin_token(client, app))
