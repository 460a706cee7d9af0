"""Code history (docs/api.md#history): the events every state change of a code records, and reading them back.

An event is written by the operation that makes the change, inside its transaction and only once the conditional
statement reported that the change happened: a refused or rolled-back change leaves no event. The helpers here are
what those operations call (``store.codes``, ``store.profiles``); :class:`EventStore` reads a code's history.

A code's history is the events naming it (``code_events.code_id``) plus the batch event that created it
(``codes.created_event``): an import writes ONE ``created`` event for all the codes it stores, not one per code,
which keeps a million-code import a bulk insert.

Webhooks (docs/api.md#webhooks): an event whose kind has a webhook type (``models.WEBHOOK_TYPES``; ``created`` has
none) is owed, by the same call and so in the same transaction, to every subscribed webhook
(``store.webhooks.enqueue``). A program event — ``pool_low``, written by :func:`record_pool_low` — names no code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from promocodes.models import WEBHOOK_TYPES, Actor, CodeEvent, CodeEventKind
from promocodes.store.base import Connection, StoreBase, read_operation, vanished
from promocodes.store.rows import _time
from promocodes.store.webhooks import enqueue

_COLUMNS = "program_id, code_id, time, event, token_id, token_name, details"
_SHOWN = "id, time, event, token_id, token_name, profile_id, database_id, details"


#: microseconds in a UTC day: ``program_days.day`` is ``time // MICROS_PER_DAY``
MICROS_PER_DAY = 86_400_000_000


class Tally(NamedTuple):
    """What a change did to its program's statistics (docs/api.md#program-statistics), counted in codes: created,
    first bound (``attached_count`` 0 → 1), released (1 → 0), first activated (``activated_count`` 0 → 1), last
    deactivated (→ 0). The caller knows it from the ``RETURNING`` row of its conditional statement."""

    created: int = 0
    attached: int = 0
    detached: int = 0
    activated: int = 0
    deactivated: int = 0


async def bump(conn: Connection, program_id: int, at: int, tally: Tally) -> None:
    """Add ``tally`` to the program's counters of the UTC day of ``at`` (``program_days``), in the caller's
    transaction: the counters move with the change or not at all.

    Lock: the upsert locks one counter row to commit — the row of (program, day, shard), where the shard is the
    connection's (``conn.counter_shard``: ``pg_backend_pid() % 64`` on PostgreSQL). Two transactions on two
    connections therefore write two rows and never wait for each other (unless their pids meet modulo 64, when
    they take turns on the row — a wait, never a wrong count), so concurrent activations do not queue on a hot
    row. It is the last lock the callers take (after the program, the code and the binding), and a transaction
    that bumps several programs (a forced profile delete) does so in program order, so it adds no lock-order
    cycle. SQLite's writes are serial (``BEGIN IMMEDIATE``): its shard is always 0."""
    await conn.fetchval(
        "INSERT INTO program_days (program_id, day, shard, created, attached, detached, activated, deactivated) "
        f"VALUES ($1, $2, {conn.counter_shard}, $3, $4, $5, $6, $7) "
        "ON CONFLICT (program_id, day, shard) DO UPDATE SET created = program_days.created + excluded.created, "
        "attached = program_days.attached + excluded.attached, "
        "detached = program_days.detached + excluded.detached, "
        "activated = program_days.activated + excluded.activated, "
        "deactivated = program_days.deactivated + excluded.deactivated RETURNING day",
        program_id,
        at // MICROS_PER_DAY,
        *tally,
    )


def _details(details: dict[str, Any] | None) -> str | None:
    return None if not details else msgspec.json.encode(details).decode()


async def record(
    conn: Connection,
    event: CodeEventKind,
    actor: Actor,
    at: int,
    program_id: int,
    code_id: int | None,
    profile_pk: int | None = None,
    details: dict[str, Any] | None = None,
    tally: Tally | None = None,
) -> int:
    """Insert one event and return its id. ``code_id`` None: a batch event (an import's ``created``), which the
    codes point at instead, or a program event (``pool_low``). With ``profile_pk``, the profile's ``profile_id``
    and ``database_id`` are copied into the event (values, not references: the history outlives the profile).

    Writes, in the caller's transaction: the ``code_events`` row, then — for a kind with a webhook type — the
    ``webhook_deliveries`` rows of the subscribed webhooks (one ``INSERT … SELECT``, ``store.webhooks.enqueue``);
    with ``tally``, what the change did to the program's statistics (:func:`bump`)."""
    args = (program_id, code_id, at, event.value, actor.token_id, actor.token_name, _details(details))
    if profile_pk is None:
        event_id: int | None = await conn.fetchval(
            f"INSERT INTO code_events ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id", *args
        )
    else:
        event_id = await conn.fetchval(
            f"INSERT INTO code_events ({_COLUMNS}, profile_id, database_id) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, profile_id, database_id FROM profiles WHERE id = $8 RETURNING id",
            *args,
            profile_pk,
        )
    if event_id is None:
        # The profile is gone. The callers hold a binding to it (which keeps it from being deleted) or have just
        # removed one in this transaction, so this cannot happen; if it ever did, the change is undone rather than
        # recorded without its profile.
        raise vanished()
    kind = WEBHOOK_TYPES.get(event)
    if kind is not None:
        await enqueue(conn, event_id, kind, program_id, code_id, at)
    if tally is not None:
        await bump(conn, program_id, at, tally)
    return event_id


async def record_pool_low(conn: Connection, program_id: int, at: int, actor: Actor) -> None:
    """After an attach took a free code (``attached_count`` 0 → 1), in its transaction: when the program has a
    ``pool_low_threshold`` T and its free codes now number exactly T - 1, the count has just crossed below T, so
    record the program event ``pool_low`` (``{"free": T - 1, "threshold": T}``) with its webhook deliveries
    (docs/api.md#webhooks).

    The count stops at T (``LIMIT``), so it costs at most T index steps whatever the pool's size. Free here means
    bound to nobody (``attached_count = 0``). No lock is taken, on purpose (attaches must not queue on the program):
    on PostgreSQL two concurrent attaches that each see only their own claim both count T - 1 and both fire, so
    the event may arrive more than once per crossing — at least once, never zero times, since the attach that
    counts first cannot see the other's uncommitted claim. Receivers treat a repeated ``pool_low`` as one warning.
    """
    threshold: int | None = await conn.fetchval("SELECT pool_low_threshold FROM programs WHERE id = $1", program_id)
    if not threshold:
        return
    free: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM codes WHERE program_id = $1 AND attached_count = 0 LIMIT $2) AS free",
        program_id,
        threshold,
    )
    if free == threshold - 1:
        details = {"free": free, "threshold": threshold}
        await record(conn, CodeEventKind.POOL_LOW, actor, at, program_id, None, details=details)


async def record_released(conn: Connection, profile_pk: int, at: int, actor: Actor) -> None:
    """Record ``detached`` for every code the profile holds without an activation, as a forced profile delete
    releases them (docs/api.md#history); called before the bindings are removed, in the same transaction. Each
    event is owed to the subscribed webhooks like any other (``store.webhooks.enqueue``, one statement per event)."""
    released = await conn.fetch(
        f"INSERT INTO code_events ({_COLUMNS}, profile_id, database_id) "
        "SELECT c.program_id, c.id, $2, $3, $4, $5, $6, p.profile_id, p.database_id "
        "FROM code_bindings b JOIN codes c ON c.id = b.code_id JOIN profiles p ON p.id = b.profile_pk "
        "WHERE b.profile_pk = $1 AND b.activated IS NULL ORDER BY b.id RETURNING id, program_id, code_id",
        profile_pk,
        at,
        CodeEventKind.DETACHED.value,
        actor.token_id,
        actor.token_name,
        _details({"reason": "profile deleted"}),
    )
    for row in sorted(released, key=lambda row: row["id"]):
        await enqueue(conn, row["id"], WEBHOOK_TYPES[CodeEventKind.DETACHED], row["program_id"], row["code_id"], at)


async def set_details(conn: Connection, event_id: int, details: dict[str, Any]) -> None:
    """Fill in what is known only after the change, such as how many codes a batch ``created`` event created."""
    await conn.fetchval("UPDATE code_events SET details = $2 WHERE id = $1 RETURNING id", event_id, _details(details))


async def forget(conn: Connection, event_id: int) -> None:
    """Remove an event recorded ahead of a change that then did not happen (a batch that created no code)."""
    await conn.fetchval("DELETE FROM code_events WHERE id = $1 RETURNING id", event_id)


def _event(row: Any) -> CodeEvent:
    details = row["details"]
    return CodeEvent(
        id=row["id"],
        time=_time(row["time"]),
        event=CodeEventKind(row["event"]),
        token_id=row["token_id"],
        token_name=row["token_name"],
        profile_id=row["profile_id"],
        database_id=row["database_id"],
        details={} if details is None else msgspec.json.decode(details),
    )


class EventStore(StoreBase):
    """Reading a code's history."""

    @read_operation
    async def code_history(
        self, conn: Connection, program_id: int, key: str, after: int, limit: int
    ) -> list[CodeEvent] | None:
        """The code's events with an id above ``after``, oldest first, at most ``limit``; None when the program holds
        no such code. One read transaction (on SQLite one snapshot; on PostgreSQL a change committed between the two
        statements can only add a newer event, which a later page shows).

        The code's own events are read through the index ``(code_id, id)`` from ``after`` on, at most ``limit`` of
        them, so a page costs the same however long the history is (a universal code attached a million times)."""
        async with conn.transaction():
            code = await conn.fetchrow(
                "SELECT id, created_event FROM codes WHERE program_id = $1 AND code_key = $2", program_id, key
            )
            if code is None:
                return None
            rows = await conn.fetch(
                f"SELECT {_SHOWN} FROM ("
                f"  SELECT {_SHOWN} FROM code_events WHERE id = CAST($2 AS BIGINT) AND id > $3"
                "   UNION ALL"
                f"  SELECT {_SHOWN} FROM ("
                f"    SELECT {_SHOWN} FROM code_events WHERE code_id = $1 AND id > $3 ORDER BY id LIMIT $4"
                "   ) AS own"
                ") AS events ORDER BY id LIMIT $4",
                code["id"],
                code["created_event"],
                after,
                limit,
            )
            return [_event(row) for row in rows]
