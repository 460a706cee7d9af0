"""What only the SQLite adapter does: group commit (``store/sqlite.py``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from promocodes.errors import NotFound
from promocodes.models import Outcome
from promocodes.store.sqlite import SqliteStore

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
        await store.import_codes(program.id, [("X", "X"), ("Y", "Y")], NOW)
        database = await store.create_database(account_id, "main", NOW)
        ann = await store.save_profile(database.id, None, "a" * 24, "ann@example.org", [], {}, NOW)
        assert await store.attach_code(program.id, "Y", "Y", ann.pk, False, False, NOW) is Outcome.DONE

        # Gathered on one store, these queue together on its database thread and share a group commit.
        refused, imported, activated, missing = await asyncio.gather(
            # all or nothing: the activation fails (X is not attached), so the new expiry must not stay
            store.update_code(program.id, "X", None, NOW + timedelta(days=1), True, True, NOW),
            store.import_codes(program.id, [("NEW", "NEW")], NOW),
            store.activate(program.id, "Y", None, NOW),
            store.import_codes(program.id + 1000, [("Z", "Z")], NOW),
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
