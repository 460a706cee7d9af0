"""The storage interface's foundation, with what every domain module of the store shares.

Every public coroutine of :class:`~promocodes.store.Store` is one whole operation, in one transaction (or one single
statement, which is atomic by itself): the service never holds a transaction open across its own code. That keeps
locks short, and it lets the SQLite adapter run each operation on its own database thread (see
``promocodes.store.sqlite``) while PostgreSQL runs it on a pooled connection.

The statements are written once, in PostgreSQL's ``$n`` style; the SQLite connection rewrites ``$n`` to ``?n``.
Times are integer microseconds (``promocodes.domain.times``) and booleans are read back through ``bool()``, so
the same statement means the same on both. The little that differs lives on :class:`Connection`: the row-lock
clauses, and the bulk insert of an import.

Correctness under concurrency lives in the domain modules — ``store.accounts`` (accounts and tokens),
``store.programs``, ``store.profiles`` (databases and profiles), ``store.codes`` and ``store.events`` (the codes'
history, written by the operations that change codes, in their transactions) — each a mixin over
:class:`StoreBase` that ``promocodes.store.Store`` composes, and each function that takes a lock says which and why
in its docstring. The rule throughout: a state change is ONE conditional ``UPDATE``/``INSERT``/``DELETE`` whose
``WHERE`` is the rule, and whose ``RETURNING`` row says whether it happened; when it did not, a read in the same
transaction says why (the :class:`~promocodes.models.Outcome`). Never read-then-write.

This module holds the :class:`Connection` protocol the adapters implement, the decorators that turn a method into
an operation (and run it inside a request's idempotency claim when it has one, ``store.claims``), the errors the
adapters raise, and :class:`StoreBase`: the lifecycle each adapter provides. Row mapping is in ``store.rows``.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

from promocodes.domain.templates import KeyPattern
from promocodes.errors import ChangedMeanwhile, StorageUnavailable
from promocodes.models import Outcome
from promocodes.store.claims import claimed

Row = Any  # sqlite3.Row and asyncpg.Record: both index by column name
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
S = TypeVar("S", bound="StoreBase")


class Connection(Protocol):
    """The few calls the shared operations make; each adapter wraps its driver's connection in one of these."""

    #: appended to a ``SELECT`` that picks a row to claim: PostgreSQL skips rows other transactions hold;
    #: SQLite needs nothing, its write transactions are already serial (``BEGIN IMMEDIATE``).
    skip_locked: str
    #: appended to a ``SELECT`` that must hold its row until commit against other holders of the same lock:
    #: ``FOR NO KEY UPDATE`` on PostgreSQL (inserts whose foreign key points at the row are not blocked); nothing
    #: on SQLite.
    lock_row: str
    #: appended to a ``SELECT`` of the program an attach binds into: ``FOR KEY SHARE`` on PostgreSQL, which any
    #: number of attaches hold together and which keeps the row from being deleted until they commit.
    share_row: str
    #: appended to a ``SELECT`` of a row about to be deleted under a condition: ``FOR UPDATE`` on PostgreSQL, which
    #: waits for every writer holding the row (``share_row``, ``lock_row``), so the condition, checked by the NEXT
    #: statement (a fresh READ COMMITTED snapshot), sees what they committed. Nothing on SQLite.
    lock_for_delete: str
    #: the SQL expression naming the ``program_days`` shard this connection's counters go to
    #: (``store.events.bump``): ``pg_backend_pid() % 64`` on PostgreSQL, ``0`` on SQLite.
    counter_shard: str

    async def lock_key(self, key: int) -> None:
        """Hold a lock on an arbitrary 64-bit key until the transaction ends, for a rule that spans rows which may
        not exist yet: ``pg_advisory_xact_lock`` on PostgreSQL; nothing on SQLite, whose write transactions are
        already serial."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row:
        """The first row, or None when there is none."""
        ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    def transaction(self) -> AbstractAsyncContextManager[None]: ...
    async def insert_codes(
        self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int, created_event: int
    ) -> set[str]:
        """Insert codes with their keys (distinct), in order, skipping keys the program holds; return the keys
        skipped (usually none). Each new code points at ``created_event``, the batch event that records its creation
        (docs/api.md#history). The bulk path of :meth:`Store.import_codes`, run under its program lock."""
        ...

    async def insert_generated(
        self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int, created_event: int
    ) -> int:
        """Insert generated codes with their keys and their batch's ``created`` event, in order, skipping keys the
        program holds (a key repeated within the batch is kept once); return how many were inserted. The bulk path
        of :meth:`Store.generate_codes`: ``executemany`` on SQLite, one ``INSERT … SELECT FROM unnest(…)`` per
        batch on PostgreSQL."""
        ...

    def key_match(self, pattern: KeyPattern) -> tuple[str, str]:
        """How this database tests ``code_key`` against a template's :class:`KeyPattern`: the SQL operator and its
        operand — ``~`` and the regular expression on PostgreSQL, ``GLOB`` and the glob on SQLite (both
        case-sensitive and whole-string)."""
        ...


def operation(
    method: Callable[Concatenate[S, Connection, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Turn ``async def op(self, conn, ...)`` into ``async def op(self, ...)`` run by the adapter's ``_run``.

    When the request's idempotency claim holds the service's render for this call, the operation runs inside the
    transaction that looks its key up first and keeps its answer with its change (``store.claims.claimed``)."""

    @functools.wraps(method)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(claimed(lambda conn: method(self, conn, *args, **kwargs)))

    return run


def read_operation(
    method: Callable[Concatenate[S, Connection, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Like :func:`operation`, for an operation that writes nothing: the adapter's ``_read`` may run it beside the
    writes (SQLite: on a reader connection, so a long import does not hold up a ``get``)."""

    @functools.wraps(method)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._read(lambda conn: method(self, conn, *args, **kwargs))

    return run


#: the time a bulk operation may take beyond the timeout, per row it is given: a 1M-code import is a long single
#: transaction by nature (seconds, not a hang), and bounding it by the timeout alone would make it always fail
BULK_SECONDS_PER_ROW = 1e-4


def bulk_operation(
    method: Callable[Concatenate[S, Connection, int, Sequence[R], P], Awaitable[T]],
) -> Callable[Concatenate[S, int, Sequence[R], P], Awaitable[T]]:
    """Like :func:`operation` (an idempotency claim included), for ``op(self, conn, owner_id, rows, ...)`` whose work
    grows with ``rows``: the operation is allowed ``BULK_SECONDS_PER_ROW`` more per row. Waiting (for a connection,
    a queue, a lock) is part of the same budget, so it stays bounded."""

    @functools.wraps(method)
    async def run(self: S, owner_id: int, rows: Sequence[R], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(
            claimed(lambda conn: method(self, conn, owner_id, rows, *args, **kwargs)),
            extra_time=len(rows) * BULK_SECONDS_PER_ROW,
        )

    return run


def vanished() -> ChangedMeanwhile:
    """For the adapters: a foreign key failed because a row the operation refers to (a profile, a program) was
    deleted by a concurrent request after the service looked it up. The transaction rolled back; a retry answers
    with the proper 404."""
    return ChangedMeanwhile("An object this request refers to was deleted meanwhile; nothing was changed")


logger = logging.getLogger("promocodes")


def timed_out(seconds: float) -> StorageUnavailable:
    """For the adapters: the 503 of an operation that did not finish within its time. The text is a plain
    sentence; what was waited for goes to the log."""
    logger.warning("A database operation did not finish within %.3g s", seconds)
    return StorageUnavailable("The database did not answer in time; retry later")


def unavailable(error: BaseException) -> StorageUnavailable:
    """For the adapters: the 503 of a driver failure. The driver's message can name hosts, rows ("DETAIL: …"),
    errno values or savepoints: it goes to the log with its type, never to the client."""
    logger.warning("The database is unavailable: %s: %s", type(error).__name__, error)
    return StorageUnavailable("The database is unavailable; retry later")


class _Rollback(Exception):
    """Raised inside a transaction to undo it while still reporting an outcome; caught right outside it (by the
    operations of ``store.codes`` and ``store.profiles``)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


class StoreLoad(NamedTuple):
    """A snapshot of a store's load (``Store.load``)."""

    #: pooled connections lent to operations; None for an adapter without a pool
    in_use: int | None
    #: operations waiting, by what they wait for: a pooled ``connection``, or the SQLite ``write``/``read`` queue
    waiting: dict[str, int]


class StoreBase(ABC):
    """What every part of the store stands on: the lifecycle each adapter provides, and the way an operation runs.
    The operations themselves are in the domain mixins that ``promocodes.store.Store`` composes."""

    # --- lifecycle, provided by each adapter ------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect (and create the SQLite file); does not migrate."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def migrate(self) -> list[str]:
        """Apply the migrations not applied yet, each in its own transaction; return their names."""

    @abstractmethod
    async def migration_status(self) -> tuple[list[str], list[str]]:
        """``(applied, pending)`` migration versions, oldest first; changes nothing (a database never migrated has
        every migration pending)."""

    @abstractmethod
    async def _run(self, work: Callable[[Connection], Awaitable[T]], extra_time: float = 0.0) -> T:
        """Run one operation on a connection of this adapter, mapping driver failures to the error tree.

        The whole of it — waiting for a connection or a lock included — is bounded by the store's timeout (plus
        ``extra_time``); past it the caller gets :class:`StorageUnavailable`, never a hang. A 503 means "maybe not
        applied, safe to retry": each adapter rolls back what it can, but an operation whose commit was already on
        its way may have been applied, and every operation is written so that running it again is harmless (a
        state change is a conditional statement: a second activate is a 409, a re-imported code a duplicate)."""

    async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run an operation that writes nothing; by default like any other (PostgreSQL reads beside writers)."""
        return await self._run(work)

    def load(self) -> StoreLoad:
        """How busy the store is right now, for ``/metrics``: read without waiting for anything."""
        return StoreLoad(None, {})

    @read_operation
    async def ping(self, conn: Connection) -> None:
        """A trivial read of the database file or server (``/readyz``): it answers within the timeout or fails
        with :class:`StorageUnavailable`. A table the first migration creates, so that a reply means the schema
        is there too."""
        await conn.fetchval("SELECT 1 FROM schema_migrations LIMIT 1")
