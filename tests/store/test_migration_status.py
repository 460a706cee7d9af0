"""Which migrations a database has and lacks, read without changing anything (``promocodes status``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promocodes.store import Store, open_store
from promocodes.store.migrations import migration_files

pytestmark = pytest.mark.anyio


async def test_a_migrated_database_has_every_migration_applied(store: Store, database_url: str) -> None:
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgres"
    applied, pending = await store.migration_status()
    assert applied == [version for version, _ in migration_files(dialect)]
    assert pending == []


async def test_a_new_database_has_every_migration_pending_and_stays_unmigrated(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/new.db")
    await store.open()
    try:
        assert await store.migration_status() == ([], [version for version, _ in migration_files("sqlite")])
        assert await store.migration_status() == ([], [version for version, _ in migration_files("sqlite")])
        assert await store.migrate()  # the reads above created nothing: every migration still applies
    finally:
        await store.close()
