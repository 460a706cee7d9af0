"""The database schema's migrations, as the command line applies and reports them (``promocodes migrate``,
``promocodes status``, and every command that opens the database)."""

from __future__ import annotations

from promocodes.store import Store


class MigrationService:
    """The database schema's migrations (``promocodes.store.migrations``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self) -> list[str]:
        """Apply the migrations the database does not have yet, each in its own transaction; their names, oldest
        first (none when it is up to date)."""
        return await self.store.migrate()

    async def status(self) -> tuple[list[str], list[str]]:
        """``(applied, pending)`` migration versions, oldest first; changes nothing."""
        return await self.store.migration_status()
