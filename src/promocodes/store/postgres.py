"""The PostgreSQL adapter (asyncpg): a connection pool, one pooled connection per operation.

Concurrency comes from PostgreSQL itself: the shared operations use conditional ``UPDATE`` statements, whose row
locks and READ COMMITTED re-evaluation make each state change happen once, and ``FOR UPDATE SKIP LOCKED`` when
many requests pick from one pool of free codes at the same moment (see the docstrings in ``store.base``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

import asyncpg

from promocodes.domain.times import to_micros, utcnow
from promocodes.errors import StorageUnavailable
from promocodes.store.base import Connection, Row, Store, vanished
from promocodes.store.migrations import CREATE_VERSIONS_TABLE, migration_files

T = TypeVar("T")

# Any id will do, as long as every process migrating this database uses the same one.
_MIGRATION_LOCK_ID = 0x70726F6D6F

# Failures after which the transaction is gone and a retry is safe: 503, not 500.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,  # deadlock or serialization failure: rolled back whole
)


class PostgresConnection:
    """:class:`~promocodes.store.base.Connection` over one asyncpg connection."""

    skip_locked = " FOR UPDATE SKIP LOCKED"
    # NO KEY UPDATE: serialises the callers that take it, without blocking inserts whose foreign key points here.
    lock_row = " FOR NO KEY UPDATE"
    # KEY SHARE: attaches share it; only FOR UPDATE (a delete) waits for them, imports and updates do not.
    share_row = " FOR KEY SHARE"
    lock_for_delete = " FOR UPDATE"

    def __init__(self, raw: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        self._raw = raw

    async def lock_key(self, key: int) -> None:
        await self._raw.execute("SELECT pg_advisory_xact_lock($1)", key)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._raw.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row:
        return await self._raw.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._raw.fetchval(sql, *args)

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return cast(AbstractAsyncContextManager[None], self._raw.transaction())

    async def insert_codes(self, program_id: int, rows: Sequence[tuple[str, str]], created: int) -> set[str]:
        # One statement for the whole batch: the arrays travel in asyncpg's binary format.
        inserted = await self._raw.fetch(
            "INSERT INTO codes (program_id, code, code_key, created) "
            "SELECT $1, code, code_key, $4 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(code, code_key, n) "
            "ORDER BY n ON CONFLICT (program_id, code_key) DO NOTHING RETURNING code_key",
            program_id,
            [code for code, _ in rows],
            [key for _, key in rows],
            created,
        )
        return {row["code_key"] for row in inserted}


class PostgresStore(Store):
    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
        except _UNAVAILABLE as error:
            raise StorageUnavailable(f"PostgreSQL: {error}") from error

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        assert self._pool is not None, "the store is not open"
        try:
            async with self._pool.acquire() as raw:
                return await work(PostgresConnection(raw))
        except _UNAVAILABLE as error:
            raise StorageUnavailable(f"PostgreSQL: {error}") from error
        except asyncpg.ForeignKeyViolationError as error:
            raise vanished() from error

    async def migrate(self) -> list[str]:
        async def apply(conn: Connection) -> list[str]:
            raw = cast(PostgresConnection, conn)._raw
            applied_now: list[str] = []
            async with raw.transaction():
                # Several processes may start at once; the first migrates, the others wait and find it done.
                await raw.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
                await raw.execute(CREATE_VERSIONS_TABLE)
                done = {row["version"] for row in await raw.fetch("SELECT version FROM schema_migrations")}
                for version, sql in migration_files("postgres"):
                    if version in done:
                        continue
                    async with raw.transaction():  # a savepoint: one migration, all or nothing
                        await raw.execute(sql)
                        await raw.execute(
                            "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
                            version,
                            to_micros(utcnow()),
                        )
                    applied_now.append(version)
            return applied_now

        return await self._run(apply)
