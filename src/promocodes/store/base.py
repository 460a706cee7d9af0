"""The storage interface, with the SQL both adapters share.

Every public coroutine of :class:`Store` is one whole operation, in one transaction (or one single statement, which
is atomic by itself): the service never holds a transaction open across its own code. That keeps locks short, and
it lets the SQLite adapter run each operation on its own database thread (see ``promocodes.store.sqlite``) while
PostgreSQL runs it on a pooled connection.

The statements are written once, in PostgreSQL's ``$n`` style; the SQLite connection rewrites ``$n`` to ``?n``.
Times are integer microseconds (``promocodes.domain.times``) and booleans are read back through ``bool()``, so
the same statement means the same on both. The little that differs lives on :class:`Connection`: the row-lock
clauses, and the bulk insert of an import.

Correctness under concurrency lives here, and each function that takes a lock says which and why in its docstring.
The rule throughout: a state change is ONE conditional ``UPDATE``/``INSERT``/``DELETE`` whose ``WHERE`` is the
rule, and whose ``RETURNING`` row says whether it happened; when it did not, a read in the same transaction says
why (the :class:`~promocodes.models.Outcome`). Never read-then-write.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Concatenate, Literal, NamedTuple, ParamSpec, Protocol, TypeVar

import msgspec

from promocodes.domain.fields import field_text
from promocodes.domain.templates import KeyPattern
from promocodes.domain.times import from_micros, to_micros
from promocodes.errors import Conflict, NotFound, StorageUnavailable
from promocodes.models import (
    PROGRAM_SETTINGS,
    SETTINGS,
    Binding,
    CodeState,
    Database,
    ExportedCode,
    Generation,
    ImportOutcome,
    Match,
    MatchMode,
    Outcome,
    Principal,
    Profile,
    Program,
    ProgramStats,
    Role,
    TokenInfo,
)

Row = Any  # sqlite3.Row and asyncpg.Record: both index by column name
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
S = TypeVar("S", bound="Store")


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
    async def insert_codes(self, program_id: int, rows: Sequence[tuple[str, str]], created: int) -> set[str]:
        """Insert ``(code, key)`` rows, skipping keys the program holds; return the keys inserted."""
        ...

    async def insert_generated(self, program_id: int, codes: Sequence[str], keys: Sequence[str], created: int) -> int:
        """Insert generated codes with their keys, in order, skipping keys the program holds (a key repeated within
        the batch is kept once); return how many were inserted. The bulk path of :meth:`Store.generate_codes`:
        ``executemany`` on SQLite, one ``INSERT … SELECT FROM unnest(…)`` per batch on PostgreSQL."""
        ...

    def key_match(self, pattern: KeyPattern) -> tuple[str, str]:
        """How this database tests ``code_key`` against a template's :class:`KeyPattern`: the SQL operator and its
        operand — ``~`` and the regular expression on PostgreSQL, ``GLOB`` and the glob on SQLite (both
        case-sensitive and whole-string)."""
        ...


def operation(
    method: Callable[Concatenate[S, Connection, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Turn ``async def op(self, conn, ...)`` into ``async def op(self, ...)`` run by the adapter's ``_run``."""

    @functools.wraps(method)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(lambda conn: method(self, conn, *args, **kwargs))

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
    """Like :func:`operation`, for ``op(self, conn, owner_id, rows, ...)`` whose work grows with ``rows``: the
    operation is allowed ``BULK_SECONDS_PER_ROW`` more per row. Waiting (for a connection, a queue, a lock) is part
    of the same budget, so it stays bounded."""

    @functools.wraps(method)
    async def run(self: S, owner_id: int, rows: Sequence[R], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(
            lambda conn: method(self, conn, owner_id, rows, *args, **kwargs),
            extra_time=len(rows) * BULK_SECONDS_PER_ROW,
        )

    return run


def vanished() -> Conflict:
    """For the adapters: a foreign key failed because a row the operation refers to (a profile, a program) was
    deleted by a concurrent request after the service looked it up. The transaction rolled back; a retry answers
    with the proper 404."""
    return Conflict("An object this request refers to was deleted meanwhile; nothing was changed")


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


def _flag(value: Any) -> bool:
    return bool(value)


_PROGRAM_COLUMNS = "id, account_id, " + ", ".join(PROGRAM_SETTINGS) + ", created"
_SETTING_KINDS = {setting.name: setting.kind for setting in SETTINGS}


def _column_value(kind: type, value: Any) -> Any:
    """A setting as read from its column: SQLite keeps booleans as 0/1 and both adapters keep times as micros."""
    if kind is bool:
        return _flag(value)
    if kind is datetime:
        return from_micros(value)
    return value


def _program(row: Row) -> Program:
    return Program(
        id=row["id"],
        account_id=row["account_id"],
        created=_time(row["created"]),
        **{setting.name: _column_value(setting.kind, row[setting.name]) for setting in SETTINGS},
    )


def _time(value: int) -> datetime:
    moment = from_micros(value)
    assert moment is not None, "a NOT NULL time column came back NULL"
    return moment


def _setting_value(name: str, value: Any) -> Any:
    return to_micros(value) if _SETTING_KINDS[name] is datetime and value is not None else value


def _token(row: Row) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        role=Role(row["role"]),
        created=_time(row["created"]),
        revoked=from_micros(row["revoked"]),
    )


def _profile(row: Row) -> Profile:
    return Profile(
        pk=row["id"],
        database_id=row["database_id"],
        profile_id=row["profile_id"],
        email=row["email"],
        phones=msgspec.json.decode(row["phones"]),
        fields=msgspec.json.decode(row["fields"]),
        created=_time(row["created"]),
        updated=_time(row["updated"]),
    )


def _binding(row: Row, side: str) -> Binding | None:
    """The ``latest_*`` or ``own_*`` columns of :data:`_CODE_STATE` as a binding, None when there is none."""
    if row[f"{side}_profile_pk"] is None:
        return None
    return Binding(
        profile_pk=row[f"{side}_profile_pk"],
        profile_id=row[f"{side}_profile_id"],
        database_id=row[f"{side}_database_id"],
        attached=_time(row[f"{side}_attached"]),
        activated=from_micros(row[f"{side}_activated"]),
    )


_CODE_STATE = """
    SELECT c.id, c.code, c.program_id, c.created, c.expire_date, c.attached_count,
           (SELECT count(activated) FROM code_bindings WHERE code_id = c.id) AS activated_count,
           (SELECT max(activated) FROM code_bindings WHERE code_id = c.id) AS last_activated,
           l.profile_pk AS latest_profile_pk, lp.profile_id AS latest_profile_id,
           lp.database_id AS latest_database_id, l.attached AS latest_attached, l.activated AS latest_activated,
           o.profile_pk AS own_profile_pk, op.profile_id AS own_profile_id,
           op.database_id AS own_database_id, o.attached AS own_attached, o.activated AS own_activated
    FROM codes c
    LEFT JOIN code_bindings l ON l.id = (
        SELECT id FROM code_bindings WHERE code_id = c.id ORDER BY attached DESC, id DESC LIMIT 1)
    LEFT JOIN profiles lp ON lp.id = l.profile_pk
    LEFT JOIN code_bindings o ON o.code_id = c.id AND o.profile_pk = CAST($3 AS BIGINT)
    LEFT JOIN profiles op ON op.id = o.profile_pk
    WHERE c.program_id = $1 AND c.code_key = $2
"""


# Profile lookups, one per matching mode. `email` and `email_profile` read the same field: this server keeps no
# separate subscriptions, so "profile email or email subscription" and "profile email only" coincide.
_PROFILE_LOOKUPS: Mapping[MatchMode, str] = {
    MatchMode.EMAIL: "SELECT * FROM profiles WHERE database_id = $1 AND email_key = $2",
    MatchMode.EMAIL_PROFILE: "SELECT * FROM profiles WHERE database_id = $1 AND email_key = $2",
    MatchMode.PROFILE_ID: "SELECT * FROM profiles WHERE database_id = $1 AND profile_id = $2",
    MatchMode.PHONE: """
        SELECT * FROM profiles WHERE id IN (
            SELECT profile_pk FROM profile_phones WHERE database_id = $1 AND digits = $2)""",
    MatchMode.CUSTOM: """
        SELECT * FROM profiles WHERE id IN (
            SELECT profile_pk FROM profile_fields WHERE database_id = $1 AND value = $2 AND name = $3)""",
}


# The field whose value a match compares, for the import lock: the email modes read one field and share a lock.
_LOOKUP_FIELDS: Mapping[MatchMode, str] = {
    MatchMode.EMAIL: "email",
    MatchMode.EMAIL_PROFILE: "email",
    MatchMode.PROFILE_ID: "profile_id",
    MatchMode.PHONE: "phone",
    MatchMode.CUSTOM: "field",
}


class ProfileData(NamedTuple):
    """What a profile is written with. ``phones`` are ``(as given, digits)``; custom fields are indexed by their
    text form (:func:`field_text`) so that ``custom`` matching finds ``42`` and ``"42"`` alike."""

    profile_id: str
    email: str | None
    phones: Sequence[tuple[str, str]]
    fields: Mapping[str, Any]


def _profile_key(database_id: int, match: Match) -> int:
    """The 64-bit key :meth:`Store.upsert_profile` locks: a hash of the database, the field and the value."""
    name = [database_id, "profile", _LOOKUP_FIELDS[match.mode], match.field_name or "", match.value]
    digest = hashlib.blake2b(msgspec.json.encode(name), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _find_profiles(conn: Connection, database_id: int, match: Match, limit: int, lock: str = "") -> list[Profile]:
    args: list[Any] = [database_id, match.value]
    if match.mode is MatchMode.CUSTOM:
        args.append(match.field_name)
    rows = await conn.fetch(f"{_PROFILE_LOOKUPS[match.mode]} ORDER BY id LIMIT {int(limit)}{lock}", *args)
    return [_profile(row) for row in rows]


async def _write_profile(
    conn: Connection, database_id: int, existing_pk: int | None, data: ProfileData, at: int
) -> Profile:
    """Insert the profile (``existing_pk`` None) or replace its data, with its phone and field look-up rows."""
    phones_json = msgspec.json.encode([given for given, _ in data.phones]).decode()
    fields_json = msgspec.json.encode(data.fields).decode()
    email_key = None if data.email is None else data.email.strip().casefold()
    if existing_pk is None:
        row = await conn.fetchrow(
            "INSERT INTO profiles (database_id, profile_id, email, email_key, phones, fields, created, updated) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING *",
            database_id,
            data.profile_id,
            data.email,
            email_key,
            phones_json,
            fields_json,
            at,
        )
    else:
        row = await conn.fetchrow(
            "UPDATE profiles SET email = $2, email_key = $3, phones = $4, fields = $5, updated = $6 "
            "WHERE id = $1 RETURNING *",
            existing_pk,
            data.email,
            email_key,
            phones_json,
            fields_json,
            at,
        )
        await conn.fetchval("DELETE FROM profile_phones WHERE profile_pk = $1 RETURNING 1", existing_pk)
        await conn.fetchval("DELETE FROM profile_fields WHERE profile_pk = $1 RETURNING 1", existing_pk)
    pk = row["id"]
    for _, digits in data.phones:
        await conn.fetchval(
            "INSERT INTO profile_phones (profile_pk, database_id, digits) VALUES ($1, $2, $3) RETURNING 1",
            pk,
            database_id,
            digits,
        )
    for name, value in data.fields.items():
        await conn.fetchval(
            "INSERT INTO profile_fields (profile_pk, database_id, name, value) VALUES ($1, $2, $3, $4) RETURNING 1",
            pk,
            database_id,
            name,
            field_text(value),
        )
    return _profile(row)


class StoreLoad(NamedTuple):
    """A snapshot of a store's load (``Store.load``)."""

    #: pooled connections lent to operations; None for an adapter without a pool
    in_use: int | None
    #: operations waiting, by what they wait for: a pooled ``connection``, or the SQLite ``write``/``read`` queue
    waiting: dict[str, int]


class Store(ABC):
    """The storage interface: what the service may ask of a database, as whole operations."""

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

    # --- accounts and tokens ----------------------------------------------------------------------------------

    @operation
    async def ensure_account(self, conn: Connection, name: str, now: datetime) -> int:
        """The id of the named account, created if missing (``ON CONFLICT`` makes concurrent creators agree)."""
        async with conn.transaction():
            await conn.fetchval(
                "INSERT INTO accounts (name, created) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
                name,
                to_micros(now),
            )
            account_id: int = await conn.fetchval("SELECT id FROM accounts WHERE name = $1", name)
            return account_id

    @read_operation
    async def find_account(self, conn: Connection, name: str) -> int | None:
        account_id: int | None = await conn.fetchval("SELECT id FROM accounts WHERE name = $1", name)
        return account_id

    @operation
    async def create_token(
        self, conn: Connection, account_id: int, name: str, role: Role, token_hash: str, now: datetime
    ) -> TokenInfo:
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO tokens (account_id, name, role, token_hash, created) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING *",
                account_id,
                name,
                role.value,
                token_hash,
                to_micros(now),
            )
            return _token(row)

    @read_operation
    async def principal_for(self, conn: Connection, token_hash: str) -> Principal | None:
        row = await conn.fetchrow(
            "SELECT id, account_id, role FROM tokens WHERE token_hash = $1 AND revoked IS NULL", token_hash
        )
        if row is None:
            return None
        return Principal(account_id=row["account_id"], role=Role(row["role"]), token_id=row["id"])

    @read_operation
    async def list_tokens(self, conn: Connection, account_id: int) -> list[TokenInfo]:
        rows = await conn.fetch("SELECT * FROM tokens WHERE account_id = $1 ORDER BY id", account_id)
        return [_token(row) for row in rows]

    @operation
    async def revoke_token(self, conn: Connection, account_id: int, token_id: int, now: datetime) -> TokenInfo | None:
        """Revoke once; revoking a revoked token changes nothing. None when the account has no such token."""
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE tokens SET revoked = COALESCE(revoked, $3) WHERE id = $2 AND account_id = $1 RETURNING *",
                account_id,
                token_id,
                to_micros(now),
            )
            return None if row is None else _token(row)

    @read_operation
    async def count_tokens(self, conn: Connection) -> int:
        count: int = await conn.fetchval("SELECT count(*) FROM tokens")
        return count

    # --- programs ---------------------------------------------------------------------------------------------

    @operation
    async def create_program(
        self, conn: Connection, account_id: int, settings: Mapping[str, Any], now: datetime
    ) -> Program:
        names = [name for name in PROGRAM_SETTINGS if name in settings]
        columns = ", ".join(["account_id", "created", *names])
        placeholders = ", ".join(f"${index}" for index in range(1, len(names) + 3))
        values = [_setting_value(name, settings[name]) for name in names]
        async with conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO programs ({columns}) VALUES ({placeholders}) RETURNING {_PROGRAM_COLUMNS}",
                account_id,
                to_micros(now),
                *values,
            )
            return _program(row)

    @read_operation
    async def get_program(self, conn: Connection, account_id: int, program_id: int) -> Program | None:
        """The program, or None when it does not exist OR belongs to another account (the two look alike)."""
        row = await conn.fetchrow(
            f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE id = $1 AND account_id = $2", program_id, account_id
        )
        return None if row is None else _program(row)

    @read_operation
    async def program_account(self, conn: Connection, program_id: int) -> int | None:
        """The account owning a program, for the command line, which acts for whichever account that is."""
        account_id: int | None = await conn.fetchval("SELECT account_id FROM programs WHERE id = $1", program_id)
        return account_id

    @read_operation
    async def list_programs(self, conn: Connection, account_id: int) -> list[Program]:
        rows = await conn.fetch(
            f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE account_id = $1 ORDER BY id", account_id
        )
        return [_program(row) for row in rows]

    @operation
    async def update_program(
        self,
        conn: Connection,
        account_id: int,
        program_id: int,
        changes: Mapping[str, Any],
        judge: Callable[[Program], bool],
    ) -> Program | Literal[False] | None:
        """Apply the changes if ``judge`` accepts them; None when the account has no such program; False when the
        program must be empty for them and holds codes.

        ``judge`` is the service's rule, called with the program as it stands right before the write: it raises
        (nothing is written) to refuse the changes, and returns True when they need an empty program.

        Lock: the program row first (``lock_row``: ``FOR NO KEY UPDATE`` on PostgreSQL), held to commit. Two
        concurrent updates therefore run one after the other, and the second is judged on the row the first wrote,
        so two changes that are each valid alone cannot together break a rule (say one turns ``generate_on_attach``
        on while the other clears the template). The same lock waits for imports in flight, which hold the row from
        their first statement to commit (see :meth:`import_codes`); the emptiness check then reads a fresh snapshot,
        so an import either lands first (and a change that needs an empty program is refused) or runs after the
        update. Attaches share the row with ``share_row``, which this lock does not wait for: a settings change
        does not stall them.
        """
        async with conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE id = $1 AND account_id = $2{conn.lock_row}",
                program_id,
                account_id,
            )
            if row is None:
                return None
            if judge(_program(row)) and await conn.fetchval(
                "SELECT 1 FROM codes WHERE program_id = $1 LIMIT 1", program_id
            ):
                return False
            # Column names come only from the fixed PROGRAM_SETTINGS list, never from the request.
            names = [name for name in PROGRAM_SETTINGS if name in changes]
            assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(names, start=2))
            row = await conn.fetchrow(
                f"UPDATE programs SET {assignments} WHERE id = $1 RETURNING {_PROGRAM_COLUMNS}",
                program_id,
                *[_setting_value(name, changes[name]) for name in names],
            )
            return _program(row)

    @operation
    async def delete_program(self, conn: Connection, account_id: int, program_id: int, force: bool) -> bool | None:
        """Delete the program with its codes: True; False when refused; None when the account has no such program.

        Without ``force`` the ``DELETE`` carries the condition "holds no attached code". Lock: the program row
        first (``lock_for_delete``), which waits for the attaches in flight (each holds ``share_row`` on it); the
        ``DELETE`` then runs with a fresh snapshot, so an attach either lands first (and the delete is refused) or
        finds the program gone (and reports the code missing). Without that lock the ``DELETE``'s snapshot would
        predate the attach, and the cascade would erase a code the attach had just reported bound."""
        async with conn.transaction():
            await conn.fetchval(
                f"SELECT id FROM programs WHERE id = $1 AND account_id = $2{conn.lock_for_delete}",
                program_id,
                account_id,
            )
            deleted = await conn.fetchval(
                "DELETE FROM programs WHERE id = $1 AND account_id = $2 AND ($3 OR NOT EXISTS ("
                "  SELECT 1 FROM codes WHERE program_id = $1 AND attached_count > 0)) RETURNING id",
                program_id,
                account_id,
                force,
            )
            if deleted is not None:
                return True
            exists = await conn.fetchval(
                "SELECT 1 FROM programs WHERE id = $1 AND account_id = $2", program_id, account_id
            )
            return False if exists else None

    @read_operation
    async def program_stats(self, conn: Connection, program_id: int, now: datetime) -> ProgramStats:
        at = to_micros(now)
        async with conn.transaction():
            row = await conn.fetchrow(
                """
                SELECT count(*) AS total,
                       COALESCE(sum(CASE WHEN attached_count = 0 AND (expire_date IS NULL OR expire_date > $2)
                                         THEN 1 ELSE 0 END), 0) AS free,
                       COALESCE(sum(CASE WHEN attached_count > 0 THEN 1 ELSE 0 END), 0) AS attached,
                       COALESCE(sum(CASE WHEN expire_date IS NOT NULL AND expire_date <= $2
                                         THEN 1 ELSE 0 END), 0) AS expired
                FROM codes WHERE program_id = $1
                """,
                program_id,
                at,
            )
            activated = await conn.fetchval(
                "SELECT count(DISTINCT b.code_id) FROM code_bindings b JOIN codes c ON c.id = b.code_id "
                "WHERE c.program_id = $1 AND b.activated IS NOT NULL",
                program_id,
            )
            return ProgramStats(
                total=int(row["total"]),
                free=int(row["free"]),
                attached=int(row["attached"]),
                activated=int(activated),
                expired=int(row["expired"]),
            )

    # --- databases and profiles -------------------------------------------------------------------------------

    @operation
    async def create_database(self, conn: Connection, account_id: int, name: str, now: datetime) -> Database:
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO databases (account_id, name, created) VALUES ($1, $2, $3) RETURNING id, name, created",
                account_id,
                name,
                to_micros(now),
            )
            return Database(id=row["id"], name=row["name"], created=_time(row["created"]))

    @read_operation
    async def list_databases(self, conn: Connection, account_id: int) -> list[Database]:
        rows = await conn.fetch("SELECT id, name, created FROM databases WHERE account_id = $1 ORDER BY id", account_id)
        return [Database(id=row["id"], name=row["name"], created=_time(row["created"])) for row in rows]

    @read_operation
    async def get_database(self, conn: Connection, account_id: int, database_id: int) -> Database | None:
        row = await conn.fetchrow(
            "SELECT id, name, created FROM databases WHERE id = $1 AND account_id = $2", database_id, account_id
        )
        return None if row is None else Database(id=row["id"], name=row["name"], created=_time(row["created"]))

    @read_operation
    async def find_profiles(self, conn: Connection, database_id: int, match: Match, limit: int = 2) -> list[Profile]:
        """Profiles of the database that the match names; ``limit`` 2 is enough to tell "one" from "several"."""
        return await _find_profiles(conn, database_id, match, limit)

    @operation
    async def upsert_profile(
        self,
        conn: Connection,
        database_id: int,
        match: Match,
        build: Callable[[list[Profile]], ProfileData],
        now: datetime,
    ) -> Profile:
        """Create the profile the match names, or rewrite the one it finds, as ONE operation: find, decide, write.

        ``build`` is the service's rule, called inside the transaction with what the match finds (up to two
        profiles, enough to tell one from several); it raises to refuse (nothing is written) or returns the data
        to write: into the profile found, or into a new one when none was.

        Lock: first a transaction-level lock on the identifying key — the database, the field the match reads
        (``email`` and ``email_profile`` read the same one, so they share it) and the normalised value: an
        advisory lock (``pg_advisory_xact_lock``) on a hash of the three on PostgreSQL, held to commit. Concurrent
        imports of one key therefore run one after the other; the look-up that follows is a fresh READ COMMITTED
        snapshot, so the second import finds the profile the first created and updates it instead of creating a
        duplicate. Different keys hash to different locks and do not wait for each other (a rare collision of two
        hashes only makes two imports wait in turn). On SQLite the write transaction (``BEGIN IMMEDIATE``) is
        already exclusive, and the look-up runs inside it.

        The profiles found are locked too (``lock_row``), so that a concurrent delete (which takes ``lock_for_delete``
        on the row) either lands first, and the look-up no longer finds the profile, or waits for this update.
        """
        async with conn.transaction():
            await conn.lock_key(_profile_key(database_id, match))
            found = await _find_profiles(conn, database_id, match, 2, conn.lock_row)
            data = build(found)
            return await _write_profile(conn, database_id, found[0].pk if found else None, data, to_micros(now))

    @operation
    async def delete_profile(self, conn: Connection, profile_pk: int, force: bool) -> bool:
        """Delete a profile (True), or refuse while it holds codes (False); with ``force``, refuse only while it
        holds activated codes.

        Without ``force`` the ``DELETE`` carries "holds no code" as its condition. With it, the profile's
        unactivated bindings go first and each code's ``attached_count`` drops in the same transaction, so personal
        codes return to the pool consistently. Lock: the profile row first (``lock_for_delete``), which
        waits for attaches in flight (their binding's foreign key holds the row); the condition is then judged on a
        fresh snapshot, so such an attach makes the delete refuse instead of failing on the foreign key."""
        try:
            async with conn.transaction():
                await conn.fetchval(f"SELECT id FROM profiles WHERE id = $1{conn.lock_for_delete}", profile_pk)
                if force:
                    # Only bindings that were never activated go: a redeemed code is a record and never returns
                    # to the pool (docs/api.md#detach), so a profile holding one stays, force or not.
                    await conn.fetch(
                        "UPDATE codes SET attached_count = attached_count - 1 WHERE id IN ("
                        "  SELECT code_id FROM code_bindings WHERE profile_pk = $1 AND activated IS NULL) RETURNING id",
                        profile_pk,
                    )
                    await conn.fetch(
                        "DELETE FROM code_bindings WHERE profile_pk = $1 AND activated IS NULL RETURNING id", profile_pk
                    )
                deleted = await conn.fetchval(
                    "DELETE FROM profiles WHERE id = $1 AND NOT EXISTS ("
                    "  SELECT 1 FROM code_bindings WHERE profile_pk = $1) RETURNING id",
                    profile_pk,
                )
                if deleted is None:
                    raise _Rollback(Outcome.ALREADY_ACTIVATED)  # refused: the released bindings come back too
                return True
        except _Rollback:
            return False

    # --- codes ------------------------------------------------------------------------------------------------

    @bulk_operation
    async def import_codes(
        self,
        conn: Connection,
        program_id: int,
        rows: Sequence[tuple[str, str]],
        now: datetime,
        case_sensitive: bool | None = None,
    ) -> ImportOutcome:
        """Insert ``(code, key)`` rows (keys already unique within the batch), in order, up to the program's limit.

        Lock: the first statement touches the program row (:func:`_program_for_insert`), which holds it until
        commit, so two imports into one program count against ``codes_limit`` one after the other and can never
        overshoot it together. Duplicates (keys the program holds) use no room. ``case_sensitive`` is the setting
        the keys were made under: checked on the locked row, so keys are never stored under a setting that changed
        since the service read the program.
        """
        async with conn.transaction():
            program = await _program_for_insert(conn, program_id, case_sensitive)
            limit = program["codes_limit"]
            room = None if limit is None else max(0, limit - program["code_count"])
            created = to_micros(now)
            inserted: set[str] = set()
            considered = 0
            while considered < len(rows) and (room is None or room > 0):
                # Without a limit, one pass; with one, try as many rows as there is room for: duplicates among
                # them leave room for the next rows, so loop until the room or the rows run out.
                end = len(rows) if room is None else considered + room
                added = await conn.insert_codes(program_id, rows[considered:end], created)
                inserted |= added
                considered = min(end, len(rows))
                if room is not None:
                    room -= len(added)
            if inserted:
                await conn.fetchval(
                    "UPDATE programs SET code_count = code_count + $2 WHERE id = $1 RETURNING code_count",
                    program_id,
                    len(inserted),
                )
            return ImportOutcome(inserted=frozenset(inserted), considered=considered)

    #: codes drawn and inserted per statement by :meth:`generate_codes`: what it holds in memory at a time
    GENERATION_BATCH = 50_000
    #: rounds :meth:`generate_codes` may add to redraw collisions. Under the key-space guard a code collides with
    #: odds of at most 1 in 1,000, so even one redraw round is rare; running out means the template is (nearly)
    #: exhausted.
    GENERATION_REDRAWS = 32

    @bulk_operation
    async def generate_codes(
        self,
        conn: Connection,
        program_id: int,
        slots: Sequence[int],
        draw: Callable[[int], tuple[list[str], list[str]]],
        pattern: KeyPattern,
        most_matching: int,
        now: datetime,
        case_sensitive: bool,
        return_codes: bool = False,
    ) -> Generation:
        """Make exactly ``len(slots)`` new codes in the program, or nothing (docs/api.md#generate).

        ``slots`` is ``range(count)``: one slot per code to make, which gives the operation its bulk time budget.
        ``draw(n)`` returns n drawn codes and their keys (they may repeat, or repeat codes the program holds).
        ``pattern`` says which keys the template can make; ``most_matching`` is the key-space bound: the codes
        asked for plus the held codes matching ``pattern`` may not exceed it. ``case_sensitive`` is the setting the
        keys are made under, as in :meth:`import_codes`.

        Lock: the program row, taken by the first statement (:func:`_program_for_insert`, as :meth:`import_codes`
        does) and held to commit. Every insert of codes into a program takes that lock first (import, attach
        creating a code, generate), so under it the program's codes cannot change: the guard's count of matching
        codes and the ``codes_limit`` check on the locked row's count stay true until the inserts commit, and two
        generations into one program run one after the other — they can neither pass the guard or the limit on the
        same count and together exceed it, nor insert the same code twice (the unique key backs that up).
        ``case_sensitive`` is judged on the locked row too.

        Under the lock: the guard (counting matching codes only when the program holds enough codes for the bound
        to be at stake: that count reads every code of the program); the limit, for the whole request; then
        batches of :attr:`GENERATION_BATCH` drawn codes, each inserted skipping keys already held, and the
        shortfall drawn again (at most :attr:`GENERATION_REDRAWS` extra rounds) until exactly the count is new.
        Memory holds one batch, plus the returned codes (read back in creation order at the end) when
        ``return_codes``. The answer gives the id range of the new codes (``after_id`` < id <= ``last_id``), by
        which :meth:`export_page` can read them back later.

        A refusal writes nothing. Any failure — a driver error, the time running out, a template too full to draw
        from — leaves the transaction by an exception, so everything it inserted is rolled back.
        """
        count = len(slots)
        async with conn.transaction():
            program = await _program_for_insert(conn, program_id, case_sensitive)
            held = program["code_count"]
            if held + count > most_matching:
                operator, operand = conn.key_match(pattern)
                matching = await conn.fetchval(
                    f"SELECT count(*) FROM codes WHERE program_id = $1 AND length(code_key) = $2 "
                    f"AND code_key {operator} $3",
                    program_id,
                    pattern.length,
                    operand,
                )
                if matching + count > most_matching:
                    return Generation(Outcome.KEY_SPACE_FULL, wanted=matching + count, allowed=most_matching)
            limit = program["codes_limit"]
            if limit is not None and held + count > limit:
                return Generation(Outcome.LIMIT_REACHED, wanted=held + count, allowed=limit)
            created = to_micros(now)
            last_id = "SELECT COALESCE(max(id), 0) FROM codes WHERE program_id = $1"  # an index seek
            after_id = await conn.fetchval(last_id, program_id)
            remaining = count
            rounds_left = -(-count // self.GENERATION_BATCH) + self.GENERATION_REDRAWS
            while remaining > 0:
                if rounds_left == 0:
                    raise Conflict("Could not draw enough new codes from the template; nothing was generated")
                rounds_left -= 1
                codes, keys = draw(min(remaining, self.GENERATION_BATCH))
                remaining -= await conn.insert_generated(program_id, codes, keys, created)
                del codes, keys  # before the next draw: one batch in memory at a time
            await conn.fetchval(
                "UPDATE programs SET code_count = code_count + $2 WHERE id = $1 RETURNING code_count", program_id, count
            )
            # Ids grow with every insert, and no other transaction inserts into the program while the lock is
            # held, so the program's ids after `after_id` are exactly the new codes, in creation order.
            returned: list[str] = []
            if return_codes:
                rows = await conn.fetch(
                    "SELECT code FROM codes WHERE program_id = $1 AND id > $2 ORDER BY id", program_id, after_id
                )
                returned = [row["code"] for row in rows]
            return Generation(
                Outcome.DONE, codes=returned, after_id=after_id, last_id=await conn.fetchval(last_id, program_id)
            )

    @read_operation
    async def code_state(
        self, conn: Connection, program_id: int, key: str, profile_pk: int | None = None
    ) -> CodeState | None:
        return await _code_state(conn, program_id, key, profile_pk)

    @operation
    async def activate(
        self, conn: Connection, program_id: int, key: str, profile_pk: int | None, now: datetime
    ) -> Outcome:
        """Redeem a code: ONE conditional ``UPDATE`` (attached, not activated, not expired, and bound to
        ``profile_pk`` when one is named).

        Lock: the ``UPDATE`` row lock. Two concurrent activations both find the binding, but the second waits on
        the first's row lock and then re-checks ``activated IS NULL`` against the committed row (PostgreSQL's READ
        COMMITTED re-evaluation; on SQLite write transactions are serial), so exactly one of them matches.
        No transaction around it: a single statement is atomic on its own, and the read that explains a refusal
        changes nothing.
        """
        return await _activate(conn, program_id, key, profile_pk, to_micros(now))

    @operation
    async def update_code(
        self,
        conn: Connection,
        program_id: int,
        key: str,
        profile_pk: int | None,
        expire_date: datetime | None,
        set_expiry: bool,
        activated: bool | None,
        now: datetime,
    ) -> Outcome:
        """Change the expiry and/or the activation, all or nothing (docs/api.md#update).

        The new expiry is written first, so the activation is judged against it; when the activation then fails,
        the transaction rolls back and the expiry stays as it was. Locks: those of the two ``UPDATE`` statements;
        activation is the same single conditional statement as :meth:`activate`.
        """
        at = to_micros(now)
        try:
            async with conn.transaction():
                return await _update_code(conn, program_id, key, profile_pk, expire_date, set_expiry, activated, at)
        except _Rollback as rollback:
            return rollback.outcome

    @operation
    async def attach_code(
        self,
        conn: Connection,
        program_id: int,
        code: str,
        key: str,
        profile_pk: int,
        multiple_usage: bool,
        create: bool,
        now: datetime,
        case_sensitive: bool | None = None,
    ) -> Outcome:
        """Bind the named code to a profile, creating it first when ``create`` and it is unknown (``case_sensitive``:
        as in :meth:`import_codes`).

        Locks: a personal code is claimed by ONE conditional ``UPDATE`` (``attached_count`` 0 → 1); of two
        concurrent claims the second re-checks the committed row, finds 1, and matches nothing. A multiple-usage
        code takes one binding row per profile, and the ``UNIQUE (code_id, profile_pk)`` constraint makes the
        second of two identical binds a no-op (``ON CONFLICT DO NOTHING``). Creating the code goes through
        :meth:`import_codes`' program-row lock, so the program limit holds. The program row is held with
        ``share_row`` to commit, so that a delete without ``force`` waits for this attach (see :meth:`delete_program`).
        """
        at = to_micros(now)
        async with conn.transaction():
            await conn.fetchval(f"SELECT id FROM programs WHERE id = $1{conn.share_row}", program_id)
            if create:
                exists = await conn.fetchval(
                    "SELECT id FROM codes WHERE program_id = $1 AND code_key = $2", program_id, key
                )
                if exists is None:
                    outcome = await self._import_one(conn, program_id, code, key, at, case_sensitive)
                    if outcome is not Outcome.DONE:
                        return outcome
            if multiple_usage:
                code_id = await conn.fetchval(
                    "INSERT INTO code_bindings (code_id, profile_pk, attached) "
                    "SELECT id, $3, $4 FROM codes WHERE program_id = $1 AND code_key = $2 "
                    "  AND (expire_date IS NULL OR expire_date > $4) "
                    "ON CONFLICT (code_id, profile_pk) DO NOTHING RETURNING code_id",
                    program_id,
                    key,
                    profile_pk,
                    at,
                )
                if code_id is not None:
                    await conn.fetchval(
                        "UPDATE codes SET attached_count = attached_count + 1 WHERE id = $1 RETURNING id", code_id
                    )
                    return Outcome.DONE
            else:
                code_id = await conn.fetchval(
                    "UPDATE codes SET attached_count = 1 WHERE program_id = $1 AND code_key = $2 "
                    "AND attached_count = 0 AND (expire_date IS NULL OR expire_date > $3) RETURNING id",
                    program_id,
                    key,
                    at,
                )
                if code_id is not None:
                    await _bind(conn, code_id, profile_pk, at)
                    return Outcome.DONE
            return _why_not_attached(await _code_state(conn, program_id, key, profile_pk), at)

    async def _import_one(
        self, conn: Connection, program_id: int, code: str, key: str, at: int, case_sensitive: bool | None
    ) -> Outcome:
        program = await _program_for_insert(conn, program_id, case_sensitive)
        if program["codes_limit"] is not None and program["code_count"] >= program["codes_limit"]:
            return Outcome.LIMIT_REACHED
        if await conn.insert_codes(program_id, [(code, key)], at):
            await conn.fetchval(
                "UPDATE programs SET code_count = code_count + 1 WHERE id = $1 RETURNING id", program_id
            )
        return Outcome.DONE

    @operation
    async def attach_from_pool(
        self, conn: Connection, program_id: int, profile_pk: int, one_per_profile: bool, now: datetime
    ) -> str | None:
        """Bind the oldest free, unexpired code of the program to the profile; None when none is free.

        Locks:
        - the program row (``share_row``), as in :meth:`attach_code`;
        - the profile row (``lock_row``: ``FOR NO KEY UPDATE`` on PostgreSQL), held to commit, so that with
          ``one_per_profile`` two concurrent attaches for one profile run one after the other and the second
          sees the first's code instead of taking another;
        - the picked code: ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claiming ``UPDATE``. Concurrent
          attaches each lock a different free row instead of queueing on the same oldest one, and the outer
          ``attached_count = 0`` re-check means a row claimed meanwhile is never claimed twice. On SQLite the
          write transaction (``BEGIN IMMEDIATE``) is itself exclusive.
        The partial index ``codes_free`` makes the pick a seek to the first free row at any number of codes.
        """
        at = to_micros(now)
        async with conn.transaction():
            await conn.fetchval(f"SELECT id FROM programs WHERE id = $1{conn.share_row}", program_id)
            await conn.fetchval(f"SELECT id FROM profiles WHERE id = $1{conn.lock_row}", profile_pk)
            if one_per_profile:
                held: str | None = await conn.fetchval(
                    "SELECT c.code FROM code_bindings b JOIN codes c ON c.id = b.code_id "
                    "WHERE b.profile_pk = $1 AND c.program_id = $2 ORDER BY b.attached, b.id LIMIT 1",
                    profile_pk,
                    program_id,
                )
                if held is not None:
                    return held
            row = await conn.fetchrow(
                "UPDATE codes SET attached_count = 1 WHERE id = ("
                "  SELECT id FROM codes WHERE program_id = $1 AND attached_count = 0"
                "    AND (expire_date IS NULL OR expire_date > $2)"
                f"  ORDER BY id LIMIT 1{conn.skip_locked}"
                ") AND attached_count = 0 RETURNING id, code",
                program_id,
                at,
            )
            if row is None:
                return None
            await _bind(conn, row["id"], profile_pk, at)
            picked: str = row["code"]
            return picked

    @operation
    async def detach(self, conn: Connection, program_id: int, key: str, profile_pk: int) -> Outcome:
        """Unbind a code from the profile that alone holds it, unless it was activated.

        Locks: the claim is ONE conditional ``UPDATE`` (``attached_count`` 1 → 0), then the binding is deleted
        under its own conditions (this profile, not activated); if that matches nothing the whole transaction
        rolls back, so a refused detach leaves the count as it was.
        """
        try:
            async with conn.transaction():
                return await _detach(conn, program_id, key, profile_pk)
        except _Rollback as rollback:
            return rollback.outcome

    @read_operation
    async def export_page(self, conn: Connection, program_id: int, after_id: int, limit: int) -> list[ExportedCode]:
        """One page of the program's codes in creation order, after ``after_id`` (keyset paging: no cursor is
        held between pages, so an export of millions of codes needs neither a long transaction nor memory)."""
        rows = await conn.fetch(
            "SELECT c.id, c.code, max(b.attached) AS attached, max(b.activated) AS activated "
            "FROM (SELECT id, code FROM codes WHERE program_id = $1 AND id > $2 ORDER BY id LIMIT $3) c "
            "LEFT JOIN code_bindings b ON b.code_id = c.id GROUP BY c.id, c.code ORDER BY c.id",
            program_id,
            after_id,
            limit,
        )
        return [
            ExportedCode(
                id=row["id"],
                code=row["code"],
                attached=from_micros(row["attached"]),
                activated=from_micros(row["activated"]),
            )
            for row in rows
        ]

    async def export_codes(self, program_id: int, page_size: int = 5000) -> AsyncIterator[ExportedCode]:
        """Every code of the program, page by page; memory stays at one page whatever the program's size."""
        after_id = 0
        while True:
            page = await self.export_page(program_id, after_id, page_size)
            for item in page:
                yield item
            if len(page) < page_size:
                return
            after_id = page[-1].id


class _Rollback(Exception):
    """Raised inside a transaction to undo it while still reporting an outcome; caught right outside it."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


async def _program_for_insert(conn: Connection, program_id: int, case_sensitive: bool | None) -> Row:
    """Lock the program row for an insert of codes (a no-op ``UPDATE``, held to commit: inserts into one program
    and a change of its ``case_sensitive`` run one after the other) and return its count and limit."""
    program = await conn.fetchrow(
        "UPDATE programs SET code_count = code_count WHERE id = $1 RETURNING code_count, codes_limit, case_sensitive",
        program_id,
    )
    if program is None:  # deleted since the service looked it up
        raise NotFound(f"Program {program_id} not found")
    if case_sensitive is not None and _flag(program["case_sensitive"]) != case_sensitive:
        raise Conflict(f"Program {program_id} changed its case sensitivity meanwhile; nothing was imported, retry")
    return program


async def _bind(conn: Connection, code_id: int, profile_pk: int, at: int) -> None:
    await conn.fetchval(
        "INSERT INTO code_bindings (code_id, profile_pk, attached) VALUES ($1, $2, $3) RETURNING id",
        code_id,
        profile_pk,
        at,
    )


async def _code_state(conn: Connection, program_id: int, key: str, profile_pk: int | None) -> CodeState | None:
    """The code with its latest binding and, when ``profile_pk`` is given, that profile's binding: ONE statement,
    so the parts are read from one snapshot without a transaction around them."""
    row = await conn.fetchrow(_CODE_STATE, program_id, key, profile_pk)
    if row is None:
        return None
    return CodeState(
        id=row["id"],
        code=row["code"],
        program_id=row["program_id"],
        created=_time(row["created"]),
        expire_date=from_micros(row["expire_date"]),
        attached_count=row["attached_count"],
        activated_count=int(row["activated_count"]),
        last_activated=from_micros(row["last_activated"]),
        latest=_binding(row, "latest"),
        own=_binding(row, "own"),
    )


async def _activate(conn: Connection, program_id: int, key: str, profile_pk: int | None, at: int) -> Outcome:
    activated = await conn.fetchval(
        """
        UPDATE code_bindings SET activated = $3
        WHERE id = (
            SELECT b.id FROM code_bindings b JOIN codes c ON c.id = b.code_id
            WHERE c.program_id = $1 AND c.code_key = $2 AND b.activated IS NULL
              AND (c.expire_date IS NULL OR c.expire_date > $3)
              AND (CAST($4 AS BIGINT) IS NULL OR b.profile_pk = $4)
            ORDER BY b.id LIMIT 1)
        AND activated IS NULL
        RETURNING id
        """,
        program_id,
        key,
        at,
        profile_pk,
    )
    if activated is not None:
        return Outcome.DONE
    state = await _code_state(conn, program_id, key, profile_pk)
    if state is None:
        return Outcome.NO_CODE
    binding = state.own if profile_pk is not None else state.latest
    if binding is None:
        return Outcome.NOT_ATTACHED if state.attached_count == 0 else Outcome.ATTACHED_ELSEWHERE
    if binding.activated is not None:
        return Outcome.ALREADY_ACTIVATED
    return Outcome.EXPIRED


async def _update_code(
    conn: Connection,
    program_id: int,
    key: str,
    profile_pk: int | None,
    expire_date: datetime | None,
    set_expiry: bool,
    activated: bool | None,
    at: int,
) -> Outcome:
    if set_expiry:
        changed = await conn.fetchval(
            "UPDATE codes SET expire_date = $3 WHERE program_id = $1 AND code_key = $2 RETURNING id",
            program_id,
            key,
            None if expire_date is None else to_micros(expire_date),
        )
        if changed is None:
            return Outcome.NO_CODE
    if activated is True:
        outcome = await _activate(conn, program_id, key, profile_pk, at)
        if outcome is not Outcome.DONE:
            raise _Rollback(outcome)  # undo the new expiry too: all or nothing
        return outcome
    if activated is False:
        outcome = await _deactivate(conn, program_id, key, profile_pk)
        if outcome not in (Outcome.DONE, Outcome.UNCHANGED):
            raise _Rollback(outcome)  # a refused deactivation undoes the new expiry as well: all or nothing
        return outcome
    return Outcome.DONE


async def _deactivate(conn: Connection, program_id: int, key: str, profile_pk: int | None) -> Outcome:
    """Clear the activation (a rollback of a redemption). A code that is not activated is left as it is."""
    cleared = await conn.fetchval(
        "UPDATE code_bindings SET activated = NULL WHERE activated IS NOT NULL "
        "AND code_id = (SELECT id FROM codes WHERE program_id = $1 AND code_key = $2) "
        "AND (CAST($3 AS BIGINT) IS NULL OR profile_pk = $3) RETURNING id",
        program_id,
        key,
        profile_pk,
    )
    if cleared is not None:
        return Outcome.DONE
    state = await _code_state(conn, program_id, key, profile_pk)
    if state is None:
        return Outcome.NO_CODE
    if profile_pk is not None and state.own is None:
        return Outcome.NOT_ATTACHED if state.attached_count == 0 else Outcome.ATTACHED_ELSEWHERE
    return Outcome.UNCHANGED


def _why_not_attached(state: CodeState | None, at: int) -> Outcome:
    if state is None:
        return Outcome.NO_CODE
    if state.own is not None:
        return Outcome.UNCHANGED
    if state.expire_date is not None and to_micros(state.expire_date) <= at:
        return Outcome.EXPIRED
    return Outcome.ATTACHED_ELSEWHERE


async def _detach(conn: Connection, program_id: int, key: str, profile_pk: int) -> Outcome:
    code_id = await conn.fetchval(
        "UPDATE codes SET attached_count = 0 WHERE program_id = $1 AND code_key = $2 AND attached_count = 1 "
        "RETURNING id",
        program_id,
        key,
    )
    if code_id is None:
        return await _why_not_detached(conn, program_id, key, profile_pk)
    removed = await conn.fetchval(
        "DELETE FROM code_bindings WHERE code_id = $1 AND profile_pk = $2 AND activated IS NULL RETURNING id",
        code_id,
        profile_pk,
    )
    if removed is None:
        # The sole binding is someone else's, or this profile's but activated; the rollback puts the count back.
        own = await conn.fetchval(
            "SELECT 1 FROM code_bindings WHERE code_id = $1 AND profile_pk = $2", code_id, profile_pk
        )
        raise _Rollback(Outcome.ALREADY_ACTIVATED if own else Outcome.ATTACHED_ELSEWHERE)
    return Outcome.DONE


async def _why_not_detached(conn: Connection, program_id: int, key: str, profile_pk: int) -> Outcome:
    state = await _code_state(conn, program_id, key, profile_pk)
    if state is None:
        return Outcome.NO_CODE
    if state.attached_count == 0:
        return Outcome.NOT_ATTACHED
    if state.attached_count > 1:
        return Outcome.SEVERAL_PROFILES
    if state.own is None:
        return Outcome.ATTACHED_ELSEWHERE
    return Outcome.ALREADY_ACTIVATED
