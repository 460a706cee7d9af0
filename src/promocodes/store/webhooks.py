"""Webhooks (docs/api.md#webhooks): the subscriptions of :class:`WebhookStore`, the outbox rows a change writes in
its own transaction (:func:`enqueue`, called by ``store.events.record``), and what the delivery worker
(``promocodes.webhooks``) asks of the database: the lease that makes one worker the deliverer, the due deliveries,
and their outcomes.

Where each write happens:

- ``webhooks``/``webhook_events``: the management operations below, each one transaction;
- ``webhook_deliveries`` rows are inserted by :func:`enqueue` inside the transaction of the change that records the
  event (so a refused or rolled-back change leaves no delivery), and updated only by the worker
  (:meth:`WebhookStore.delivery_succeeded`, :meth:`WebhookStore.delivery_failed`), each a conditional ``UPDATE``
  on a row still ``pending``;
- ``webhook_lease``: :meth:`WebhookStore.take_lease`, one conditional upsert.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from promocodes.domain.times import to_micros
from promocodes.models import (
    WEBHOOK_TYPES,
    CodeEventKind,
    Delivery,
    DeliveryState,
    DueDelivery,
    Webhook,
    WebhookEventType,
)
from promocodes.store.base import Connection, Row, StoreBase, operation, read_operation
from promocodes.store.rows import _flag, _time

#: the type order answers list a webhook's events in
_TYPE_ORDER = {kind: index for index, kind in enumerate(WebhookEventType)}


async def enqueue(
    conn: Connection, event_id: int, kind: WebhookEventType, program_id: int, code_id: int | None, at: int
) -> None:
    """Owe the event to every active webhook of the program's account subscribed to its type: ONE
    ``INSERT … SELECT``, which inserts nothing when nobody subscribes (the cost of a change is then one index probe
    of ``webhooks_account``). Runs inside the transaction of the change that recorded the event
    (``store.events.record``), so the delivery exists exactly when the change was committed."""
    await conn.fetch(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, code_id, next_attempt, created) "
        "SELECT w.id, CAST($1 AS BIGINT), CAST($2 AS BIGINT), CAST($3 AS BIGINT), CAST($3 AS BIGINT) "
        "FROM webhooks w JOIN webhook_events t ON t.webhook_id = w.id AND t.event_type = $4 "
        "WHERE w.account_id = (SELECT account_id FROM programs WHERE id = $5) AND w.active",
        event_id,
        code_id,
        at,
        kind.value,
        program_id,
    )


def _sorted_types(types: Sequence[str]) -> tuple[WebhookEventType, ...]:
    return tuple(sorted((WebhookEventType(kind) for kind in types), key=_TYPE_ORDER.__getitem__))


def _webhook(row: Row, types: Sequence[str]) -> Webhook:
    return Webhook(
        id=row["id"],
        account_id=row["account_id"],
        url=row["url"],
        events=_sorted_types(types),
        description=row["description"],
        active=_flag(row["active"]),
        secret=row["secret"],
        created=_time(row["created"]),
    )


def _delivery(row: Row) -> Delivery:
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        type=_webhook_type(row["event"]),
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt=_time(row["next_attempt"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        created=_time(row["created"]),
        finished=None if row["finished"] is None else _time(row["finished"]),
    )


def _webhook_type(event: str) -> WebhookEventType:
    return WEBHOOK_TYPES[CodeEventKind(event)]


async def _types_of(conn: Connection, webhook_id: int) -> list[str]:
    rows = await conn.fetch("SELECT event_type FROM webhook_events WHERE webhook_id = $1", webhook_id)
    return [row["event_type"] for row in rows]


async def _subscribe(conn: Connection, webhook_id: int, types: Sequence[WebhookEventType]) -> None:
    for kind in dict.fromkeys(types):  # a type given twice is one subscription
        await conn.fetchval(
            "INSERT INTO webhook_events (webhook_id, event_type) VALUES ($1, $2) RETURNING webhook_id",
            webhook_id,
            kind.value,
        )


_DUE = (
    "SELECT d.id, d.webhook_id, w.url, w.secret, d.attempts, d.created, e.id AS event_id, e.event, e.time, "
    "  e.program_id, c.code, e.profile_id, e.database_id, e.details "
    "FROM webhook_deliveries d "
    "JOIN webhooks w ON w.id = d.webhook_id "
    "JOIN code_events e ON e.id = d.event_id "
    "LEFT JOIN codes c ON c.id = e.code_id "
    "WHERE d.state = 'pending' AND d.next_attempt <= $1 AND w.active "
    # Order per code: a delivery waits while an earlier one of the same webhook and code is still pending (retried
    # or not yet due), so the receiver sees one code's events in the order they happened.
    "  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.webhook_id = d.webhook_id "
    "    AND p.code_id = d.code_id AND p.state = 'pending' AND p.id < d.id) "
    "ORDER BY d.id LIMIT $2"
)


class WebhookStore(StoreBase):
    """Webhooks and their outbox."""

    # --- management (docs/api.md#webhooks-create and the sections after it) ---------------------------------------

    @operation
    async def create_webhook(
        self,
        conn: Connection,
        account_id: int,
        url: str,
        types: Sequence[WebhookEventType],
        description: str,
        secret: str,
        now: datetime,
    ) -> Webhook:
        """Insert the webhook (created active) and its event types, in one transaction."""
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO webhooks (account_id, url, description, active, secret, created) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                account_id,
                url,
                description,
                True,
                secret,
                to_micros(now),
            )
            await _subscribe(conn, row["id"], types)
            return _webhook(row, [kind.value for kind in types])

    @read_operation
    async def list_webhooks(self, conn: Connection, account_id: int) -> list[Webhook]:
        """The account's webhooks by id: one read transaction (one snapshot on SQLite; on PostgreSQL a change
        committed between the two statements can only show a webhook's newer types)."""
        async with conn.transaction():
            rows = await conn.fetch("SELECT * FROM webhooks WHERE account_id = $1 ORDER BY id", account_id)
            types = await conn.fetch(
                "SELECT t.webhook_id, t.event_type FROM webhook_events t JOIN webhooks w ON w.id = t.webhook_id "
                "WHERE w.account_id = $1",
                account_id,
            )
        by_webhook: dict[int, list[str]] = {}
        for row in types:
            by_webhook.setdefault(row["webhook_id"], []).append(row["event_type"])
        return [_webhook(row, by_webhook.get(row["id"], [])) for row in rows]

    @operation
    async def update_webhook(
        self,
        conn: Connection,
        account_id: int,
        webhook_id: int,
        changes: dict[str, Any],
        types: Sequence[WebhookEventType] | None,
    ) -> Webhook | None:
        """Change the given fields (``url``, ``description``, ``active``) and, when ``types`` is given, replace the
        subscribed types; None when the account has no such webhook.

        Lock: the conditional ``UPDATE`` of the webhook row comes first and holds the row to commit, so two
        concurrent updates replace the types one after the other, never interleaved. Deliveries already in the
        outbox stay; the new types apply to events recorded after the commit."""
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhooks SET url = COALESCE($3, url), description = COALESCE($4, description), "
                "active = COALESCE($5, active) WHERE id = $2 AND account_id = $1 RETURNING *",
                account_id,
                webhook_id,
                changes.get("url"),
                changes.get("description"),
                changes.get("active"),
            )
            if row is None:
                return None
            if types is not None:
                await conn.fetch("DELETE FROM webhook_events WHERE webhook_id = $1", webhook_id)
                await _subscribe(conn, webhook_id, types)
            return _webhook(row, await _types_of(conn, webhook_id))

    @operation
    async def delete_webhook(self, conn: Connection, account_id: int, webhook_id: int) -> bool:
        """Delete the webhook with its types and its outbox (by cascade); False when the account has none such."""
        deleted = await conn.fetchval(
            "DELETE FROM webhooks WHERE id = $1 AND account_id = $2 RETURNING id", webhook_id, account_id
        )
        return deleted is not None

    @read_operation
    async def webhook_deliveries(
        self, conn: Connection, account_id: int, webhook_id: int, limit: int
    ) -> list[Delivery] | None:
        """The webhook's most recent deliveries, newest first; None when the account has no such webhook."""
        async with conn.transaction():
            found = await conn.fetchval(
                "SELECT id FROM webhooks WHERE id = $1 AND account_id = $2", webhook_id, account_id
            )
            if found is None:
                return None
            rows = await conn.fetch(
                "SELECT d.*, e.event FROM webhook_deliveries d JOIN code_events e ON e.id = d.event_id "
                "WHERE d.webhook_id = $1 ORDER BY d.id DESC LIMIT $2",
                webhook_id,
                limit,
            )
        return [_delivery(row) for row in rows]

    # --- the delivery worker (promocodes.webhooks) ----------------------------------------------------------------

    @operation
    async def take_lease(self, conn: Connection, owner: str, now: datetime, seconds: float) -> bool:
        """Take or renew the deliverer's lease until ``now + seconds``; False while another owner holds it.

        ONE conditional upsert on the single lease row: it writes when the row is missing, expired, or ours. Two
        workers racing for an expired lease both run it; the row lock (PostgreSQL: the second re-checks the
        ``WHERE`` against the first's committed row) or SQLite's serial writes let exactly one win."""
        at = to_micros(now)
        until = at + int(seconds * 1_000_000)
        won = await conn.fetchval(
            "INSERT INTO webhook_lease (id, owner, lease_until) VALUES (1, $1, $3) "
            "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until "
            "WHERE webhook_lease.lease_until < $2 OR webhook_lease.owner = $1 RETURNING owner",
            owner,
            at,
            until,
        )
        return won is not None

    @operation
    async def release_lease(self, conn: Connection, owner: str) -> None:
        """Give the lease up at shutdown, so that another worker takes over at once instead of after it expires."""
        await conn.fetchval("UPDATE webhook_lease SET lease_until = 0 WHERE id = 1 AND owner = $1 RETURNING id", owner)

    @read_operation
    async def due_deliveries(self, conn: Connection, now: datetime, limit: int) -> list[DueDelivery]:
        """Up to ``limit`` pending deliveries due now, in id order, none of which waits for an earlier pending one
        of the same webhook and code (so they may be sent concurrently without breaking any code's order)."""
        rows = await conn.fetch(_DUE, to_micros(now), limit)
        return [
            DueDelivery(
                id=row["id"],
                webhook_id=row["webhook_id"],
                url=row["url"],
                secret=row["secret"],
                attempts=row["attempts"],
                created=row["created"],
                event_id=row["event_id"],
                event=CodeEventKind(row["event"]),
                time=row["time"],
                program_id=row["program_id"],
                code=row["code"],
                profile_id=row["profile_id"],
                database_id=row["database_id"],
                details={} if row["details"] is None else msgspec.json.decode(row["details"]),
            )
            for row in rows
        ]

    @operation
    async def delivery_succeeded(self, conn: Connection, delivery_id: int, status: int, now: datetime) -> None:
        """Mark delivered; a delivery no longer pending (sent twice by two workers, at least once) stays as it is."""
        await conn.fetchval(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, last_status = $2, "
            "last_error = '', finished = $3 WHERE id = $1 AND state = 'pending' RETURNING id",
            delivery_id,
            status,
            to_micros(now),
        )

    @operation
    async def delivery_failed(
        self,
        conn: Connection,
        delivery_id: int,
        status: int | None,
        error: str,
        next_attempt: datetime | None,
        now: datetime,
    ) -> None:
        """Count a failed attempt: retry at ``next_attempt``, or, when it is None, mark the delivery failed (it
        then no longer holds back the later events of its code). Only a delivery still pending is changed."""
        await conn.fetchval(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2, last_error = $3, "
            "next_attempt = COALESCE($4, next_attempt), "
            "state = CASE WHEN $4 IS NULL THEN 'failed' ELSE 'pending' END, "
            "finished = CASE WHEN $4 IS NULL THEN CAST($5 AS BIGINT) ELSE NULL END "
            "WHERE id = $1 AND state = 'pending' RETURNING id",
            delivery_id,
            status,
            error,
            None if next_attempt is None else to_micros(next_attempt),
            to_micros(now),
        )
