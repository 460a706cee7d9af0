"""The webhook outbox in the store (docs/api.md#webhooks), on SQLite and on PostgreSQL: a change owes its event to
the subscribed webhooks in its own transaction (a refused or rolled-back change owes nothing), ``pool_low`` fires
when the free codes cross below the threshold, the worker's pick keeps each code's order, and one lease holder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promocodes.models import Actor, Outcome, WebhookEventType
from promocodes.store import Store
from tests.helpers import ACTOR, save_profile, sql_rows

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
SHOP = Actor(token_id=7, token_name="shop")
ALL = list(WebhookEventType)


async def world(store: Store, *codes: str, **settings: Any) -> tuple[int, int, int]:
    """A program holding ``codes`` and a database, in account acme: ``(account_id, program_id, db_id)``."""
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "Spring", **settings}, NOW)
    if codes:
        await store.import_codes(program.id, [(code, code) for code in codes], NOW, actor=ACTOR)
    return account_id, program.id, (await store.create_database(account_id, "main", NOW)).id


async def hook(store: Store, account_id: int, *types: WebhookEventType) -> int:
    webhook = await store.create_webhook(account_id, "http://127.0.0.1:9/", types or ALL, "", "whsec_x", NOW)
    return webhook.id


async def outbox(database_url: str) -> list[tuple[int, str, str | None]]:
    """``(webhook_id, event, code)`` of every delivery, in id order."""
    rows = await sql_rows(
        database_url,
        "SELECT d.webhook_id, e.event, c.code FROM webhook_deliveries d JOIN code_events e ON e.id = d.event_id "
        "LEFT JOIN codes c ON c.id = d.code_id ORDER BY d.id",
    )
    return [(row["webhook_id"], row["event"], row["code"]) for row in rows]


async def test_each_change_owes_its_event_to_every_subscribed_active_webhook(store: Store, database_url: str) -> None:
    account_id, program_id, db_id = await world(store, "A")
    everything = await hook(store, account_id)
    activations = await hook(store, account_id, WebhookEventType.CODE_ACTIVATED)
    paused = await hook(store, account_id)
    await store.update_webhook(account_id, paused, {"active": False}, None)
    other_account = await store.ensure_account("other", NOW)
    await hook(store, other_account)  # another account's webhook hears nothing of acme's codes
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)

    assert await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP) is Outcome.DONE
    assert await store.activate(program_id, "A", None, LATER, actor=SHOP) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, LATER, True, False, LATER, actor=SHOP) is Outcome.DONE
    assert await store.detach(program_id, "A", ann.pk, LATER, actor=SHOP) is Outcome.DONE

    assert await outbox(database_url) == [
        (everything, "attached", "A"),
        (everything, "activated", "A"),
        (activations, "activated", "A"),
        (everything, "expiry_changed", "A"),
        (everything, "deactivated", "A"),
        (everything, "detached", "A"),
    ]


async def test_imports_owe_nothing_and_a_change_without_subscribers_writes_no_row(
    store: Store, database_url: str
) -> None:
    account_id, program_id, db_id = await world(store)
    await hook(store, account_id, WebhookEventType.CODE_DETACHED)
    await store.import_codes(program_id, [("A", "A"), ("B", "B")], NOW, actor=ACTOR)
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP)
    assert await outbox(database_url) == []


async def test_a_refused_or_rolled_back_change_owes_nothing(store: Store, database_url: str) -> None:
    account_id, program_id, db_id = await world(store, "A", "B")
    await hook(store, account_id)
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    bob = await save_profile(store, db_id, "b" * 24, "bob@example.org", [], {}, NOW)
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP)
    before = await outbox(database_url)

    # refused: attached elsewhere; not attached; an activation that fails after the expiry was written (rolled back)
    assert await store.attach_code(program_id, "A", "A", bob.pk, False, False, NOW, actor=SHOP) is not Outcome.DONE
    assert await store.activate(program_id, "B", None, NOW, actor=SHOP) is Outcome.NOT_ATTACHED
    past = NOW - timedelta(days=1)
    assert await store.update_code(program_id, "A", None, past, True, True, NOW, actor=SHOP) is Outcome.EXPIRED
    assert await store.detach(program_id, "B", ann.pk, NOW, actor=SHOP) is not Outcome.DONE
    assert await outbox(database_url) == before


async def test_a_forced_profile_delete_owes_a_detached_event_per_released_code(store: Store, database_url: str) -> None:
    account_id, program_id, db_id = await world(store, "A", "B")
    webhook_id = await hook(store, account_id, WebhookEventType.CODE_DETACHED)
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    for code in ("A", "B"):
        await store.attach_code(program_id, code, code, ann.pk, False, False, NOW, actor=SHOP)
    assert await store.delete_profile(ann.pk, True, NOW, actor=SHOP)
    assert await outbox(database_url) == [(webhook_id, "detached", "A"), (webhook_id, "detached", "B")]


async def test_pool_low_fires_when_the_free_codes_cross_below_the_threshold(store: Store, database_url: str) -> None:
    account_id, program_id, db_id = await world(store, "A", "B", "C", "D", pool_low_threshold=3)
    webhook_id = await hook(store, account_id, WebhookEventType.PROGRAM_POOL_LOW)
    profiles = [await save_profile(store, db_id, f"{n:024x}", f"p{n}@example.org", [], {}, NOW) for n in range(4)]

    await store.attach_from_pool(program_id, profiles[0].pk, False, NOW, actor=SHOP)  # 4 → 3 free: not below 3
    assert await outbox(database_url) == []
    await store.attach_code(program_id, "D", "D", profiles[1].pk, False, False, NOW, actor=SHOP)  # 3 → 2: crossed
    assert await outbox(database_url) == [(webhook_id, "pool_low", None)]
    await store.attach_from_pool(program_id, profiles[2].pk, False, NOW, actor=SHOP)  # 2 → 1: still below
    assert len(await outbox(database_url)) == 1

    # Freed back to 3 (not below), then taken again: a new crossing, a new event.
    await store.detach(program_id, "B", profiles[2].pk, NOW, actor=SHOP)
    await store.detach(program_id, "D", profiles[1].pk, NOW, actor=SHOP)
    await store.attach_from_pool(program_id, profiles[3].pk, False, NOW, actor=SHOP)
    events = await sql_rows(database_url, "SELECT code_id, details FROM code_events WHERE event = 'pool_low'")
    assert [(row["code_id"], row["details"]) for row in events] == [
        (None, '{"free":2,"threshold":3}'),
        (None, '{"free":2,"threshold":3}'),
    ]
    assert [kind for _, kind, _ in await outbox(database_url)] == ["pool_low", "pool_low"]


async def test_a_program_without_a_threshold_never_fires_pool_low(store: Store, database_url: str) -> None:
    account_id, program_id, db_id = await world(store, "A")
    await hook(store, account_id)
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    await store.attach_from_pool(program_id, ann.pk, False, NOW, actor=SHOP)
    assert [kind for _, kind, _ in await outbox(database_url)] == ["attached"]


async def test_the_pick_keeps_each_codes_order_and_a_failed_delivery_stops_holding_it_back(store: Store) -> None:
    account_id, program_id, db_id = await world(store, "A", "B")
    await hook(store, account_id)
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP)
    await store.activate(program_id, "A", None, NOW, actor=SHOP)
    await store.attach_code(program_id, "B", "B", ann.pk, False, False, NOW, actor=SHOP)

    due = await store.due_deliveries(LATER, 10)
    assert [(item.code, item.event.value) for item in due] == [("A", "attached"), ("B", "attached")]
    first = due[0]
    assert (first.url, first.secret, first.program_id, first.profile_id) == (
        "http://127.0.0.1:9/",
        "whsec_x",
        program_id,
        "a" * 24,
    )

    # A's first delivery fails and is retried later: A's activation waits behind it, B's event does not.
    await store.delivery_failed(first.id, 500, "HTTP 500", LATER + timedelta(minutes=5), LATER)
    assert [item.code for item in await store.due_deliveries(LATER, 10)] == ["B"]
    # Given up (failed): it no longer holds A's later event back.
    await store.delivery_failed(first.id, None, "timed out", None, LATER)
    assert [(item.code, item.event.value) for item in await store.due_deliveries(LATER, 10)] == [
        ("A", "activated"),
        ("B", "attached"),
    ]
    await store.delivery_succeeded(due[1].id, 204, LATER)
    assert [item.code for item in await store.due_deliveries(LATER, 10)] == ["A"]
    (shown_failed, *_) = reversed(await store.webhook_deliveries(account_id, first.webhook_id, 10) or [])
    assert (shown_failed.state, shown_failed.attempts, shown_failed.last_error) == ("failed", 2, "timed out")


async def test_one_lease_holder_until_it_expires_or_is_released(store: Store) -> None:
    assert await store.take_lease("one", NOW, 30)
    assert not await store.take_lease("two", NOW + timedelta(seconds=10), 30)
    assert await store.take_lease("one", NOW + timedelta(seconds=10), 30)  # renewed until +40 s
    assert not await store.take_lease("two", NOW + timedelta(seconds=35), 30)
    assert await store.take_lease("two", NOW + timedelta(seconds=41), 30)  # expired: taken over
    assert not await store.take_lease("one", NOW + timedelta(seconds=42), 30)
    await store.release_lease("two")
    assert await store.take_lease("one", NOW + timedelta(seconds=43), 30)


async def test_deleting_a_webhook_deletes_what_it_was_owed(store: Store, database_url: str) -> None:
    account_id, program_id, db_id = await world(store, "A")
    webhook_id = await hook(store, account_id)
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP)
    assert len(await outbox(database_url)) == 1
    assert await store.delete_webhook(account_id, webhook_id)
    assert await outbox(database_url) == []
    assert not await store.delete_webhook(account_id, webhook_id)
    assert await store.webhook_deliveries(account_id, webhook_id, 10) is None
