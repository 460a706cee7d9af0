"""What only the SQLite adapter does: group commit (``store/sqlite.py``)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from promocodes.errors import Conflict, NotFound, StorageUnavailable
from promocodes.models import Match, MatchMode, Outcome, Role
from promocodes.store.migrations import migration_files
from promocodes.store.sqlite import SqliteStore
from tests.helpers import ACTOR, save_profile

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(str(path))
    await store.open()
    await store.migrate()
    return store


async def test_operations_of_one_group_fail_and_succeed_independently(tmp_path: Path) -> None:
    store = await opened(tmp_path / "group.db")
    try:
        account_id = await store.ensure_account("acme", NOW)
        program = await store.create_program(account_id, {"name": "P"}, NOW)
        await store.import_codes(program.id, [("X", "X"), ("Y", "Y")], NOW, actor=ACTOR)
        database = await store.create_database(account_id, "main", NOW)
        ann = await save_profile(store, database.id, "a" * 24, "ann@example.org", [], {}, NOW)
        assert await store.attach_code(program.id, "Y", "Y", ann.pk, False, False, NOW, actor=ACTOR) is Outcome.DONE

        # Gathered on one store, these queue together on its database thread and share a group commit.
        refused, imported, activated, missing = await asyncio.gather(
            # all or nothing: the activation fails (X is not attached), so the new expiry must not stay
            store.update_code(program.id, "X", None, NOW + timedelta(days=1), True, True, NOW, actor=ACTOR),
            store.import_codes(program.id, [("NEW", "NEW")], NOW, actor=ACTOR),
            store.activate(program.id, "Y", None, NOW, actor=ACTOR),
            store.import_codes(program.id + 1000, [("Z", "Z")], NOW, actor=ACTOR),
            return_exceptions=True,
        )
        assert refused is Outcome.NOT_ATTACHED
        assert not isinstance(imported, BaseException) and imported.inserted == {"NEW"}
        assert activated is Outcome.DONE
        assert isinstance(missing, NotFound)
    finally:
        await store.close()

    # A second connection sees exactly what the answers said: the group was committed before they were given.
    reader = await opened(tmp_path / "group.db")
    try:
        x = await reader.code_state(program.id, "X")
        y = await reader.code_state(program.id, "Y")
        assert x is not None and x.expire_date is None
        assert y is not None and y.activated_count == 1
        assert await reader.code_state(program.id, "NEW") is not None
    finally:
        await reader.close()


# --- the migration to AUTOINCREMENT ids (0002) ------------------------------------------------------------------------

REBUILT = ("accounts", "databases", "profiles", "programs", "tokens")


def schema(path: Path) -> dict[str, Any]:
    """Every table's columns and foreign keys, and every index, read from the file itself."""
    raw = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if row[0] != "sqlite_sequence"
        ]
        return {
            "columns": {t: raw.execute(f"PRAGMA table_info({t})").fetchall() for t in tables},
            "foreign_keys": {t: raw.execute(f"PRAGMA foreign_key_list({t})").fetchall() for t in tables},
            "indexes": {t: sorted(row[1:] for row in raw.execute(f"PRAGMA index_list({t})")) for t in tables},
            "index_sql": sorted(raw.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")),
        }
    finally:
        raw.close()


def table_sql(path: Path, table: str) -> str:
    raw = sqlite3.connect(path)
    try:
        sql: str = raw.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        return sql
    finally:
        raw.close()


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the application."""
    raw = sqlite3.connect(path)
    try:
        tables = [row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: sorted(tuple(row) for row in raw.execute(f"SELECT * FROM {t}"))
            for t in tables
            if t not in ("schema_migrations", "sqlite_sequence")
        }
    finally:
        raw.close()


def migrations_until(monkeypatch: pytest.MonkeyPatch, last: str, *extra: tuple[str, str]) -> None:
    """Make ``migrate`` see the migrations up to ``last`` only, then ``extra`` ones."""
    files = migration_files("sqlite")
    kept = files[: [version for version, _ in files].index(last) + 1]
    monkeypatch.setattr("promocodes.store.sqlite.migration_files", lambda dialect: [*kept, *extra])


def old_program(path: Path, account_id: int, name: str, template: str | None = None) -> int:
    """A program row as the 0001 schema holds it. Written directly: the store of today reads columns that later
    migrations add (the program settings added since), which a database still at 0001 does not have."""
    raw = sqlite3.connect(path)
    try:
        with raw:
            cursor = raw.execute(
                "INSERT INTO programs (account_id, name, template, created) VALUES (?, ?, ?, ?)",
                (account_id, name, template, int(NOW.timestamp() * 1_000_000)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    finally:
        raw.close()


def old_codes(path: Path, program_id: int, *codes: str) -> dict[str, int]:
    """Codes as the 0001 schema holds them, written directly (the store of today also writes their history, in a
    table 0001 does not have); their ids by code."""
    raw = sqlite3.connect(path)
    try:
        with raw:
            for code in codes:
                raw.execute(
                    "INSERT INTO codes (program_id, code, code_key, created) VALUES (?, ?, ?, ?)",
                    (program_id, code, code, int(NOW.timestamp() * 1_000_000)),
                )
            raw.execute("UPDATE programs SET code_count = code_count + ? WHERE id = ?", (len(codes), program_id))
        return dict(raw.execute("SELECT code, id FROM codes WHERE program_id = ?", (program_id,)).fetchall())
    finally:
        raw.close()


def old_binding(path: Path, code_id: int, profile_pk: int, activated: bool) -> None:
    """A code bound to a profile (and activated), as the 0001 schema holds it; see :func:`old_codes`."""
    at = int(NOW.timestamp() * 1_000_000)
    raw = sqlite3.connect(path)
    try:
        with raw:
            raw.execute(
                "INSERT INTO code_bindings (code_id, profile_pk, attached, activated) VALUES (?, ?, ?, ?)",
                (code_id, profile_pk, at, at if activated else None),
            )
            raw.execute("UPDATE codes SET attached_count = 1 WHERE id = ?", (code_id,))
    finally:
        raw.close()


def as_before(later: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``later`` without what migrations after 0002 added — columns at the end of a table (``ADD COLUMN``), whole
    tables with their indexes, and new indexes of old tables (0007's ``codes_expiry``) — so that it compares with
    what 0001 held: a schema (from ``schema``) or rows (from ``dump``)."""
    if "columns" in later:
        widths = {table: len(columns) for table, columns in before["columns"].items()}
        names = {row[0] for row in before["index_sql"]} | {
            index[0] for indexes in before["indexes"].values() for index in indexes
        }
        return {
            "columns": {t: columns[: widths[t]] for t, columns in later["columns"].items() if t in widths},
            "foreign_keys": {t: keys for t, keys in later["foreign_keys"].items() if t in widths},
            "indexes": {
                t: [index for index in indexes if index[0] in names]
                for t, indexes in later["indexes"].items()
                if t in widths
            },
            "index_sql": [row for row in later["index_sql"] if row[1] in widths and row[0] in names],
        }
    widths = {table: len(rows[0]) for table, rows in before.items() if rows}
    return {t: [row[: widths.get(t, len(row))] for row in rows] for t, rows in later.items() if t in before}


async def test_migration_to_autoincrement_keeps_every_row_and_relation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database in use before 0002 (migrated to 0001 only, holding every kind of row) comes through 0002 whole:
    the same rows, columns, indexes and foreign keys, cascades still on; and from then on deleted ids stay unused.
    (With foreign keys on during the rebuild, dropping ``programs`` would cascade and take every code with it.)"""
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        migrations_until(patch, "0001_initial")
        store = await opened(path)
        try:
            account_id = await store.ensure_account("acme", NOW)
            await store.create_token(account_id, "ci", Role.WRITE, "hash-1", NOW)
            first = old_program(path, account_id, "P", "A-##")
            kept = old_program(path, account_id, "Q")
            codes = old_codes(path, first, "X", "Y", "Z")
            old_codes(path, kept, "K")
            database = await store.create_database(account_id, "main", NOW)
            ann = await save_profile(
                store, database.id, "a" * 24, "ann@example.org", [("+1 555", "1555")], {"crm": 42}, NOW
            )
            bob = await save_profile(store, database.id, "b" * 24, "bob@example.org", [], {}, NOW)
            old_binding(path, codes["X"], ann.pk, activated=False)
            old_binding(path, codes["Y"], bob.pk, activated=True)
        finally:
            await store.close()
    rows_before, schema_before = dump(path), schema(path)
    assert all("AUTOINCREMENT" not in table_sql(path, table) for table in REBUILT)

    store = await opened(path)  # every migration this time: 0002 runs on the filled database
    try:
        assert as_before(dump(path), rows_before) == rows_before
        assert as_before(schema(path), schema_before) == schema_before
        assert all("AUTOINCREMENT" in table_sql(path, table) for table in REBUILT)
        # Foreign keys are enforced again: a cascade still reaches the children, a binding still holds its profile.
        assert await store.delete_program(account_id, kept, True) is True
        assert await store.code_state(kept, "K") is None
        assert await store.delete_profile(bob.pk, True, NOW, actor=ACTOR) is False
        assert [p.pk for p in await store.find_profiles(database.id, Match(MatchMode.PHONE, "1555"))] == [ann.pk]
        # The highest ids deleted: the next ones are larger.
        assert (await store.create_program(account_id, {"name": "R"}, NOW)).id > kept
        newer = await save_profile(store, database.id, "c" * 24, "carol@example.org", [], {}, NOW)
        assert await store.delete_profile(newer.pk, False, NOW, actor=ACTOR) is True
        assert (await save_profile(store, database.id, "d" * 24, None, [], {}, NOW)).pk > newer.pk
    finally:
        await store.close()


async def test_a_migration_leaving_a_dangling_reference_fails_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Foreign keys are off while a migration runs (so that tables can be rebuilt), and checked before it commits:
    one that leaves a reference dangling is rolled back, and they are on again afterwards."""
    path = tmp_path / "bad.db"
    store = await opened(path)
    try:
        account_id = await store.ensure_account("acme", NOW)
        await store.create_token(account_id, "ci", Role.WRITE, "hash-1", NOW)
    finally:
        await store.close()
    rows_before = dump(path)
    with monkeypatch.context() as patch:
        migrations_until(patch, migration_files("sqlite")[-1][0], ("9999_bad", "DELETE FROM accounts;\n"))
        store = SqliteStore(str(path))
        await store.open()
        try:
            with pytest.raises(RuntimeError, match="9999_bad"):
                await store.migrate()
            assert dump(path) == rows_before  # the account (and its token) are still there
            # Foreign keys are on again for the operations that follow.
            with pytest.raises(Conflict):
                await store.create_program(account_id + 1, {"name": "Orphan"}, NOW)
        finally:
            await store.close()


async def test_a_missing_folder_is_an_error_never_created(tmp_path: Path) -> None:
    """A mistyped path must not become a new, empty database in a new folder tree."""
    store = SqliteStore(str(tmp_path / "typo" / "promocodes.db"))
    with pytest.raises(StorageUnavailable, match="folder of the SQLite database does not exist"):
        await store.open()
    await store.close()
    assert not (tmp_path / "typo").exists()
