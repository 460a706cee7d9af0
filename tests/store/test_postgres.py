"""The PostgreSQL adapter's pool sends no reset query when a connection comes back (store/postgres.py's
``_PooledConnection``): that is only safe while no statement of the store leaves state in the session. These tests
read every statement of the store for what would outlive its transaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from promocodes.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio

STORE = Path(__file__).resolve().parents[2] / "src" / "promocodes" / "store"
SOURCES = sorted(path for path in STORE.rglob("*.py"))
#: what outlives a transaction: a session-level lock, a setting, a listener, a cursor held WITH HOLD, a temporary
#: table not dropped at commit
SESSION_STATE = {
    "session advisory lock": re.compile(r"pg_advisory_lock|pg_try_advisory_lock", re.IGNORECASE),
    # upper case only, as the store writes its SQL: a docstring's "Set the expiry" is no statement
    "session setting": re.compile(r"""["']\s*SET\s+(?!LOCAL\b)|set_config\([^)]*false"""),
    "listener": re.compile(r"""["']\s*LISTEN\b|add_listener""", re.IGNORECASE),
    "held cursor": re.compile(r"WITH\s+HOLD", re.IGNORECASE),
    "temporary table kept past commit": re.compile(
        r"CREATE\s+TEMP(ORARY)?\s+TABLE(?![^\"']*ON\s+COMMIT\s+DROP)", re.IGNORECASE
    ),
}


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(STORE)))
def test_no_statement_of_the_store_leaves_state_in_the_session(path: Path) -> None:
    text = path.read_text()
    found = [name for name, pattern in SESSION_STATE.items() if pattern.search(text)]
    assert not found, f"{path.name}: {', '.join(found)} — the pool no longer resets sessions (store/postgres.py)"


def test_the_rules_catch_what_they_are_for() -> None:
    caught = {
        "session advisory lock": "await conn.fetch('SELECT pg_advisory_lock($1)', key)",
        "session setting": 'await conn.execute("SET search_path TO x")',
        "listener": "await raw.add_listener('channel', callback)",
        "held cursor": "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "temporary table kept past commit": '"CREATE TEMP TABLE incoming (code text)"',
    }
    for name, statement in caught.items():
        assert SESSION_STATE[name].search(statement), name
    allowed = [
        '"CREATE TEMPORARY TABLE incoming (code text) ON COMMIT DROP"',
        '"SET LOCAL lock_timeout = 1"',
        '"UPDATE codes SET expire_date = $2"',
        "pg_advisory_xact_lock($1)",
    ]
    for statement in allowed:
        assert not any(pattern.search(statement) for pattern in SESSION_STATE.values()), statement


async def test_a_connection_comes_back_to_the_pool_without_a_reset_query(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, pool_size=1)
    await store.open()
    try:
        assert store._pool is not None
        async with store._pool.acquire() as raw:
            assert raw._con.get_reset_query() == ""  # type: ignore[attr-defined]
    finally:
        await store.close()
