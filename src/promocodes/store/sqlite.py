"""The SQLite adapter: the embedded default, a single file created on first start.

Design: every write runs on ONE dedicated database thread that owns the writing ``sqlite3`` connection and runs a
private event loop. The shared operations of :class:`~promocodes.store.Store` are coroutines; on that thread
their awaits on SQLite return at once (the calls are synchronous), so an operation costs one hop between threads,
never blocks the server's event loop, and never interleaves with another operation of this process.

Group commit: the operations that arrive while the thread is busy run together in ONE transaction, each inside its
own savepoint (a failed operation rolls back to its savepoint and leaves the others alone), and the group commits
once. No caller hears back before that commit, so durability is the same as one transaction per operation, while
the costly part of a commit (the fsync of ``synchronous=FULL``) is paid once per group instead of once per
operation. An operation's own ``transaction()`` is a nested savepoint.

Reads (the operations marked ``read_operation``) do not queue behind the writes: a few reader threads, each owning
one ``query_only`` connection, take them in turn. WAL lets a reader see the last commit while the writer is in the
middle of the next one, so a ``get`` answers while a million-code import is being written. A read sees every write
that was acknowledged: a write is answered only after its group committed, and a read starts a fresh snapshot. An
in-memory database lives in one connection only, so there every read runs on the writer.

Timeouts: a caller waits at most ``timeout`` seconds (more for a bulk import, see ``store.base``) for its answer,
then gets :class:`~promocodes.errors.StorageUnavailable`. An operation still queued then is cancelled and never
runs; one that had already started cannot be stopped halfway (SQLite runs it synchronously) — it finishes, and
commits with its group: that is why a 503 means "maybe not applied, safe to retry". ``busy_timeout`` (how long a
connection waits for another process's write lock) is the same ``timeout``, so the writer never blocks longer on a
lock than a caller waits. Writes queued behind a long one (a big import) wait for it, and past the timeout answer
503 without running: import big files in chunks (the command line does, 10,000 codes per transaction).

Across processes (``serve --workers N``) the file is shared. WAL mode lets readers proceed beside the single
writer; every group starts with ``BEGIN IMMEDIATE``, taking SQLite's write lock up front, so two processes'
conditional updates are serial; ``busy_timeout`` makes a writer wait for the lock instead of failing.
``synchronous=FULL`` makes each commit durable before the answer goes out: an acknowledged write is not lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import queue
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from promocodes.domain.templates import KeyPattern
from promocodes.domain.times import to_micros, utcnow
from promocodes.errors import StorageUnavailable
from promocodes.store import Store
from promocodes.store.base import Connection, Row, StoreLoad, timed_out, unavailable, vanished
from promocodes.store.migrations import CREATE_VERSIONS_TABLE, migration_files, migration_status

T = TypeVar("T")

READERS = 2  # reader threads (and connections) per store: reads are short index look-ups or pages
MAX_GROUP = 256  # operations per group commit: bounds one transaction's size and a group's latency
_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    """PostgreSQL's ``$1`` placeholders → SQLite's numbered ``?1``."""
    return _PLACEHOLDER.sub(r"?\1", sql)


Work = Callable[[Connection], Awaitable[Any]]


class SqliteConnection:
    """:class:`~promocodes.store.base.Connection` over ``sqlite3``; used only on the thread owning the connection."""

    skip_locked = ""  # write transactions are serial: nothing to skip
    lock_row = ""  # ... and nothing to lock beyond BEGIN IMMEDIATE
    share_row = ""
    lock_for_delete = ""
    # One writer at a time: one counter row per program and day (store.events.bump).
    counter_shard = "0"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw

    async def lock_key(self, key: int) -> None:
        """Nothing to lock: the operation already runs inside the group's ``BEGIN IMMEDIATE``."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._raw.execute(_translate(sql), args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row:
        return self._raw.execute(_translate(sql), args).fetchone()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = self._raw.execute(_translate(sql), args).fetchone()
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # Always nested: every operation already runs in the group's BEGIN IMMEDIATE, inside its own savepoint.
        self._raw.execute("SAVEPOINT tx")
        try:
            yield
        except BaseException:
            self._raw.execute("ROLLBACK TO tx")
            self._raw.execute("RELEASE tx")
            raise
        self._raw.execute("RELEASE tx")

    async def insert_codes(
        self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int, created_event: int
    ) -> set[str]:
        # One executemany, skipping held keys (insert_generated); when it inserted fewer rows than given, ONE
        # look-up finds the keys skipped: those of the batch whose row another event created. The caller's
        # transaction holds the write lock, so the rows cannot change in between.
        if await self.insert_generated(program_id, codes, keys, created, created_event) == len(codes):
            return set()
        held = self._raw.execute(
            "SELECT code_key FROM codes WHERE program_id = ?1 AND code_key IN (SELECT value FROM json_each(?2)) "
            "AND created_event IS NOT ?3",
            (program_id, json.dumps(keys), created_event),
        )
        return {row[0] for row in held}

    async def insert_generated(
        self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int, created_event: int
    ) -> int:
        # One executemany for the batch; a skipped conflict changes no row, so the summed row count is the number
        # inserted.
        cursor = self._raw.executemany(
            "INSERT INTO codes (program_id, code, code_key, created, created_event) VALUES (?1, ?2, ?3, ?4, ?5) "
            "ON CONFLICT (program_id, code_key) DO NOTHING",
            zip(itertools.repeat(program_id), codes, keys, itertools.repeat(created), itertools.repeat(created_event)),
        )
        return cursor.rowcount

    def key_match(self, pattern: KeyPattern) -> tuple[str, str]:
        # GLOB, unlike LIKE, is case-sensitive and has character classes; it runs in SQLite itself.
        return "GLOB", pattern.glob


class SqliteStore(Store):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._raw: sqlite3.Connection | None = None
        self._pending: list[tuple[Work, concurrent.futures.Future[Any]]] = []
        self._flush_scheduled = False
        self._readers: list[threading.Thread] = []
        self._reads: queue.SimpleQueue[tuple[Work, concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()

    async def open(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"sqlite:{self.path}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        await self._on_thread(self._connect)
        if self.path == ":memory:":  # a second connection would see another, empty database
            return
        # After the writer: it has put the file in WAL mode, which is what lets these read beside it.
        connections = await asyncio.to_thread(lambda: [self._reader_connection() for _ in range(READERS)])
        for index, raw in enumerate(connections):
            reader = threading.Thread(
                target=self._serve_reads, args=(raw,), name=f"sqlite-read-{index}:{self.path}", daemon=True
            )
            reader.start()
            self._readers.append(reader)

    async def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        readers, self._readers = self._readers, []
        for _ in readers:
            self._reads.put(None)  # one stop per reader: each finishes the reads queued before it, then closes
        for reader in readers:
            await asyncio.to_thread(reader.join)
        await self._on_thread(self._disconnect)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()
        self._loop = self._thread = None

    def _busy_timeout(self, raw: sqlite3.Connection) -> None:
        # Set first: even the pragmas that follow may wait for another process's lock, never longer than this.
        raw.execute(f"PRAGMA busy_timeout = {max(1, int(self.timeout * 1000))}")

    async def _connect(self) -> None:
        folder = Path(self.path).absolute().parent
        if self.path != ":memory:" and not folder.is_dir():
            # Never made here: a mistyped path would otherwise become a new, empty database in a new folder tree.
            raise StorageUnavailable(f"The folder of the SQLite database does not exist: {folder}")
        raw = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        raw.row_factory = sqlite3.Row
        self._busy_timeout(raw)
        raw.execute("PRAGMA journal_mode = WAL")
        raw.execute("PRAGMA synchronous = FULL")
        raw.execute("PRAGMA foreign_keys = ON")
        self._raw = raw

    def _reader_connection(self) -> sqlite3.Connection:
        """A connection for one reader thread (made here, then used by that thread alone)."""
        raw = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        raw.row_factory = sqlite3.Row
        self._busy_timeout(raw)
        raw.execute("PRAGMA query_only = ON")  # a read operation that tried to write would fail, not write
        return raw

    async def _disconnect(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    async def _on_thread(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` alone on the database thread (connect, disconnect, migrate), outside any group. Not bounded
        by the timeout: these run at start and stop, and a migration may rewrite big tables."""
        assert self._loop is not None, "the store is not open"

        async def guarded() -> T:
            try:
                return await work()
            except sqlite3.Error as error:
                raise _storage_error(error) from error

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(guarded(), self._loop))

    def load(self) -> StoreLoad:
        """Writes queued for the next group commit and reads queued for a reader thread. Read from another
        thread without a lock: the list is replaced whole, never half-changed, so its length is some true count
        of a moment ago, which is all a gauge needs."""
        return StoreLoad(None, {"write": len(self._pending), "read": self._reads.qsize()})

    async def _run(self, work: Callable[[Connection], Awaitable[T]], extra_time: float = 0.0) -> T:
        assert self._loop is not None, "the store is not open"
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._enqueue, work, future)
        return await self._answer(future, self.timeout + extra_time)

    async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        if not self._readers:  # in memory: the writer's connection is the only one holding the data
            return await self._run(work)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._reads.put((work, future))
        return await self._answer(future, self.timeout)

    @staticmethod
    async def _answer(future: concurrent.futures.Future[T], budget: float) -> T:
        """Wait at most ``budget`` seconds for the answer. Past it, cancel: an operation still queued is then
        skipped by the thread that would have run it (``set_running_or_notify_cancel``); one already running
        cannot be stopped and finishes unheard (see the module docstring)."""
        timer = asyncio.timeout(budget)
        try:
            async with timer:
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if not timer.expired():
                raise
            future.cancel()  # wrap_future has done so already; said again because everything rests on it
            raise timed_out(budget) from None

    def _serve_reads(self, raw: sqlite3.Connection) -> None:
        """One reader thread: takes read operations off the shared queue one at a time, on its own connection (a
        ``sqlite3`` connection is never used by two threads at once). Runs until it takes a stop (None)."""
        loop = asyncio.new_event_loop()  # drives the operations' coroutines; their awaits return at once
        try:
            while (job := self._reads.get()) is not None:
                work, future = job
                if not future.set_running_or_notify_cancel():
                    continue  # the caller gave up while it waited
                try:
                    value = loop.run_until_complete(work(SqliteConnection(raw)))
                except Exception as error:
                    future.set_exception(_storage_error(error))
                else:
                    future.set_result(value)
                finally:
                    if raw.in_transaction:  # never keep a snapshot open between reads: the next must see it all
                        with contextlib.suppress(sqlite3.Error):
                            raw.execute("ROLLBACK")
        finally:
            loop.close()
            raw.close()

    def _enqueue(self, work: Work, future: concurrent.futures.Future[Any]) -> None:
        """On the database thread: queue the operation; the first one queued schedules the group's flush, and
        everything that arrives before that flush runs (or while the previous one commits) joins the group."""
        self._pending.append((work, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Run one group: ``BEGIN IMMEDIATE``, each operation in its savepoint, one ``COMMIT``, then the answers.

        Lock: SQLite's write lock, taken up front by ``BEGIN IMMEDIATE`` (waiting at most ``busy_timeout`` for
        another process to release it) and held until the group's commit, so no other writer can change what an
        operation's conditional statements just judged. Readers are not blocked (WAL).
        """
        batch, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        self._flush_scheduled = False
        if self._pending:  # more than one group's worth: the rest goes next
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.create_task(self._flush())
        waiting = [(work, future) for work, future in batch if not future.cancelled()]
        if not waiting:  # every caller gave up: do not even take the lock
            return
        raw = self._raw
        assert raw is not None, "the store is not open"
        answers: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        try:
            raw.execute("BEGIN IMMEDIATE")
            for work, future in waiting:
                # Claimed only now, not when the group began: a caller that gives up while the operations before
                # its own run still cancels it, and it never runs.
                if not future.set_running_or_notify_cancel():
                    continue
                raw.execute("SAVEPOINT operation")
                try:
                    value = await work(SqliteConnection(raw))
                except Exception as error:
                    raw.execute("ROLLBACK TO operation")
                    raw.execute("RELEASE operation")
                    answers.append((future, False, _storage_error(error)))
                else:
                    raw.execute("RELEASE operation")
                    answers.append((future, True, value))
            raw.execute("COMMIT")
        except sqlite3.Error as error:  # the lock, the savepoints or the commit failed: the whole group is undone
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            failure = _storage_error(error)
            for _, future in waiting:  # those that ran, and those not reached yet (unless their caller gave up)
                if future.running() or future.set_running_or_notify_cancel():
                    future.set_exception(failure)
            return
        # Only now, after the commit, does any caller hear back.
        for future, succeeded, value in answers:
            if succeeded:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def migrate(self) -> list[str]:
        """Apply the migrations not applied yet, each in its own ``BEGIN IMMEDIATE`` transaction.

        Foreign keys are off while a migration runs, so that it can rebuild a table the documented way (create,
        copy, drop, rename): with them on, dropping a parent table would delete its children by cascade. The pragma
        is a no-op inside a transaction, so it is set around each one; before the commit ``foreign_key_check`` must
        find nothing, else the migration is rolled back and fails. They are on again afterwards, whatever happened.
        """

        async def apply() -> list[str]:
            raw = self._raw
            assert raw is not None, "the store is not open"
            raw.execute(CREATE_VERSIONS_TABLE)
            applied_now: list[str] = []
            for version, sql in migration_files("sqlite"):
                raw.execute("PRAGMA foreign_keys = OFF")
                try:
                    if _apply_migration(raw, version, sql):
                        applied_now.append(version)
                finally:
                    raw.execute("PRAGMA foreign_keys = ON")
            return applied_now

        return await self._on_thread(apply)

    async def migration_status(self) -> tuple[list[str], list[str]]:
        async def read() -> set[str]:
            raw = self._raw
            assert raw is not None, "the store is not open"
            if not raw.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone():
                return set()
            return {row[0] for row in raw.execute("SELECT version FROM schema_migrations")}

        return migration_status("sqlite", await self._on_thread(read))


def _apply_migration(raw: sqlite3.Connection, version: str, sql: str) -> bool:
    """Apply one migration in one transaction, unless it is recorded already; True when it was applied now."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        if raw.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
            raw.execute("ROLLBACK")
            return False
        # executescript would COMMIT first; run the file statement by statement inside our transaction
        # instead, so a failing migration leaves nothing behind.
        for statement in _statements(sql):
            raw.execute(statement)
        dangling = raw.execute("PRAGMA foreign_key_check").fetchall()
        if dangling:
            found = ", ".join(f"{row[0]} row {row[1]} points into {row[2]}" for row in dangling[:5])
            raise RuntimeError(f"Migration {version} leaves references to missing rows ({found}); rolled back")
        raw.execute("INSERT INTO schema_migrations (version, applied) VALUES (?, ?)", (version, to_micros(utcnow())))
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return True


def _storage_error(error: BaseException) -> BaseException:
    """The error a caller sees for a failure inside an operation."""
    if isinstance(error, sqlite3.OperationalError):
        # "database is locked" after busy_timeout, "unable to open", "disk I/O error": the storage is unavailable
        # right now, and the work was rolled back, so a retry is safe. The message goes to the log only.
        return unavailable(error)
    if isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error):
        return vanished()
    return error


def _statements(script: str) -> list[str]:
    """Split a migration into statements, using SQLite's own notion of a complete statement."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip() and not all(part.strip().startswith("--") for part in pending.splitlines() if part.strip()):
        raise ValueError(f"Incomplete statement at the end of a migration: {pending[:80]!r}")
    return statements
