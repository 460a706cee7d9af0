"""The PostgreSQL adapter (asyncpg): a connection pool, one pooled connection per operation.

Concurrency comes from PostgreSQL itself: the shared operations use conditional ``UPDATE`` statements, whose row
locks and READ COMMITTED re-evaluation make each state change happen once, and ``FOR UPDATE SKIP LOCKED`` when
many requests pick from one pool of free codes at the same moment (see the docstrings in ``store.codes`` and the
other domain modules).

Timeouts: one operation — waiting for a pooled connection, for a row another transaction holds, for a server that
stopped answering — is bounded by ``timeout`` seconds as a whole (``asyncio.timeout`` around it), and asyncpg's own
limits back that up: the connect timeout, ``acquire(timeout=)``, and a per-statement timeout of what is left of the
operation's time (``command_timeout`` for the statements asyncpg issues itself, such as ``BEGIN``/``COMMIT``).
A connection abandoned mid-operation is terminated, never returned to the pool: its transaction may still be open
and its protocol mid-message. Terminating it closes the socket, and the server rolls back whatever it had not
committed — so a 503 means "maybe not applied": not applied, unless the ``COMMIT`` itself was already sent, which is
why the operations are written to be safe to run twice (see ``StoreBase._run``). (A server process stuck waiting for
a lock notices the closed socket only once it gets the lock; it then rolls back at once.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

import asyncpg

from promocodes.domain.templates import KeyPattern
from promocodes.domain.times import to_micros, utcnow
from promocodes.store import Store
from promocodes.store.base import Connection, Row, StoreLoad, timed_out, unavailable, vanished
from promocodes.store.migrations import CREATE_VERSIONS_TABLE, migration_files, migration_status

T = TypeVar("T")

# Any id will do, as long as every process migrating this database uses the same one.
_MIGRATION_LOCK_ID = 0x70726F6D6F
# Migrations run once, at start, and may rewrite big tables: they get their own, generous bound.
MIGRATION_TIMEOUT = 600.0

# Failures after which the transaction is gone and a retry is safe: 503, not 500.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,  # deadlock or serialization failure: rolled back whole
    asyncpg.exceptions.QueryCanceledError,  # a server-side statement_timeout or a cancel request
    asyncpg.exceptions.LockNotAvailableError,  # a server-side lock_timeout
)

_INSERT_CODES = (
    "INSERT INTO codes (program_id, code, code_key, created, created_event) "
    "SELECT $1, code, code_key, $4, $5 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(code, code_key, n) "
    "ORDER BY n"
)


class _PooledConnection(asyncpg.Connection):
    """asyncpg's connection without the reset query its pool sends each time a connection comes back
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): a round trip per operation, paid for session
    state this store never leaves behind — its locks are transaction-scoped (``pg_advisory_xact_lock``), it sets no
    session setting, listens to nothing and keeps no cursor or temporary table past its transaction (a test reads
    the store's SQL for each). An open transaction is still rolled back on release (asyncpg's ``_reset``)."""

    def get_reset_query(self) -> str:
        return ""


class PostgresConnection:
    """:class:`~promocodes.store.base.Connection` over one asyncpg connection."""

    skip_locked = " FOR UPDATE SKIP LOCKED"
    # NO KEY UPDATE: serialises the callers that take it, without blocking inserts whose foreign key points here.
    lock_row = " FOR NO KEY UPDATE"
    # KEY SHARE: attaches share it; only FOR UPDATE (a delete) waits for them, imports and updates do not.
    share_row = " FOR KEY SHARE"
    lock_for_delete = " FOR UPDATE"
    # The counter row of program_days this connection writes (store.events.bump): one per backend, modulo 64.
    counter_shard = "pg_backend_pid() % 64"

    def __init__(self, raw: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], deadline: float) -> None:
        self._raw = raw
        self._deadline = deadline  # on the event loop's clock: when the operation's time runs out
        self._collided = False  # a plain insert of generated codes met a held key (insert_generated)

    def _left(self) -> float:
        """What is left of the operation's time, for the statement about to run (asyncpg then cancels it itself)."""
        return max(self._deadline - asyncio.get_running_loop().time(), 0.001)

    async def lock_key(self, key: int) -> None:
        await self._raw.execute("SELECT pg_advisory_xact_lock($1)", key)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._raw.fetch(sql, *args, timeout=self._left())

    async def fetchrow(self, sql: str, *args: Any) -> Row:
        return await self._raw.fetchrow(sql, *args, timeout=self._left())

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._raw.fetchval(sql, *args, timeout=self._left())

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return cast(AbstractAsyncContextManager[None], self._raw.transaction())

    async def insert_codes(
        self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int, created_event: int
    ) -> set[str]:
        # One statement for the whole batch, the arrays travelling in asyncpg's binary format; ORDER BY the
        # ordinality makes the ids follow the input order (export's creation order, docs/api.md#export_all).
        # As in insert_generated: a plain insert first, inside a savepoint — as fast as COPY, while skipping
        # conflicts probes the unique index before every row. The caller holds the program lock, so no other
        # transaction inserts into this program meanwhile: the plain insert never waits on another's uncommitted
        # key, and only a key the program already held can make it fail. Then it is undone and the batch inserted
        # again skipping those keys; the rows it returns say which keys went in.
        args = (program_id, codes, keys, created, created_event)
        try:
            async with self._raw.transaction():
                await self._raw.execute(_INSERT_CODES, *args, timeout=self._left())
            return set()
        except asyncpg.UniqueViolationError:
            pass
        rows = await self._raw.fetch(
            f"{_INSERT_CODES} ON CONFLICT (program_id, code_key) DO NOTHING RETURNING code_key",
            *args,
            timeout=self._left(),
        )
        inserted = {row[0] for row in rows}
        return {key for key in keys if key not in inserted}

    async def insert_generated(
        self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int, created_event: int
    ) -> int:
        # Drawn codes rarely collide (the key-space guard sees to that), so a batch is first inserted plainly — as
        # fast as COPY — inside a savepoint. Only when that meets a held key is it undone and inserted skipping
        # conflicts (a probe of the unique index before every row, about a quarter slower), and so is every later
        # batch of this operation: collisions are evidently not rare here.
        rows = "SELECT $1, code, code_key, $4, $5 FROM unnest($2::text[], $3::text[]) AS t(code, code_key)"
        insert = f"INSERT INTO codes (program_id, code, code_key, created, created_event) {rows}"
        if not self._collided:
            try:
                async with self._raw.transaction():
                    await self._raw.execute(
                        insert, program_id, codes, keys, created, created_event, timeout=self._left()
                    )
                return len(codes)
            except asyncpg.UniqueViolationError:
                self._collided = True
        # The command tag ("INSERT 0 <n>") counts the rows inserted.
        status = await self._raw.execute(
            f"{insert} ON CONFLICT (program_id, code_key) DO NOTHING",
            program_id,
            codes,
            keys,
            created,
            created_event,
            timeout=self._left(),
        )
        return int(status.rsplit(" ", 1)[1])

    def key_match(self, pattern: KeyPattern) -> tuple[str, str]:
        return "~", pattern.regex


class PostgresStore(Store):
    def __init__(self, dsn: str, pool_size: int = 10, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._operations = 0  # running or waiting for a connection (``load``)
        # Concurrent activations share transactions (store.redemptions): each commit here costs a round trip and a
        # WAL flush, which a group pays once.
        self._redemptions = self._group_redemptions()

    async def open(self) -> None:
        """Connect the pool's first connection, within the timeout (a frozen server must not stall the start)."""
        try:
            async with asyncio.timeout(self.timeout):
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    connection_class=_PooledConnection,
                    timeout=self.timeout,  # connect
                    command_timeout=self.timeout,  # the statements asyncpg issues on its own (BEGIN, COMMIT, reset)
                )
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except _UNAVAILABLE as error:
            raise unavailable(error) from error

    async def close(self) -> None:
        """Close the pool gracefully within the timeout; past it (a frozen server never answers the goodbye),
        terminate every connection: shutting down must not hang either."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await pool.close()
        except (TimeoutError, *_UNAVAILABLE):
            pool.terminate()

    async def _run(self, work: Callable[[Connection], Awaitable[T]], extra_time: float = 0.0) -> T:
        """One pooled connection for the operation, the whole bounded by ``timeout + extra_time``.

        Lock: none of its own; the pool hands each operation a connection of its own (waiting at most the
        operation's time for one), and the row locks the operation takes live in its transaction, released at its
        end — or, when the time runs out, when the terminated connection's transaction is rolled back."""
        assert self._pool is not None, "the store is not open"
        budget = self.timeout + extra_time
        deadline = asyncio.get_running_loop().time() + budget
        self._operations += 1
        try:
            async with asyncio.timeout(budget):
                async with self._pool.acquire(timeout=budget) as raw:
                    try:
                        return await work(PostgresConnection(raw, deadline))
                    except (asyncio.CancelledError, TimeoutError):
                        # Abandoned mid-statement (our deadline, a statement timeout, or the caller went away):
                        # the connection may hold an open transaction and half a protocol exchange. Close the
                        # socket; the server rolls the transaction back, and the pool opens a fresh connection.
                        raw.terminate()
                        raise
        except TimeoutError:
            raise timed_out(budget) from None
        except _UNAVAILABLE as error:
            raise unavailable(error) from error
        except asyncpg.ForeignKeyViolationError as error:
            raise vanished() from error
        finally:
            self._operations -= 1

    def load(self) -> StoreLoad:
        """Connections lent out, and the operations beyond them (those waiting for a connection): asyncpg
        counts the first, this store counts the operations under way."""
        pool = self._pool
        if pool is None:
            return StoreLoad(0, {"connection": 0})
        in_use = pool.get_size() - pool.get_idle_size()
        return StoreLoad(in_use, {"connection": max(self._operations - in_use, 0)})

    async def migrate(self) -> list[str]:
        async def apply(conn: Connection) -> list[str]:
            pg = cast(PostgresConnection, conn)
            raw = pg._raw
            applied_now: list[str] = []
            async with raw.transaction():
                # Several processes may start at once; the first migrates, the others wait and find it done.
                await raw.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID, timeout=pg._left())
                await raw.execute(CREATE_VERSIONS_TABLE, timeout=pg._left())
                done = {
                    row["version"]
                    for row in await raw.fetch("SELECT version FROM schema_migrations", timeout=pg._left())
                }
                for version, sql in migration_files("postgres"):
                    if version in done:
                        continue
                    async with raw.transaction():  # a savepoint: one migration, all or nothing
                        await raw.execute(sql, timeout=pg._left())
                        await raw.execute(
                            "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
                            version,
                            to_micros(utcnow()),
                            timeout=pg._left(),
                        )
                    applied_now.append(version)
            return applied_now

        return await self._run(apply, extra_time=MIGRATION_TIMEOUT)

    async def migration_status(self) -> tuple[list[str], list[str]]:
        async def read(conn: Connection) -> set[str]:
            if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
                return set()
            return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}

        return migration_status("postgres", await self._read(read))
