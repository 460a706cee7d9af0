"""Webhook deliveries to a real HTTP receiver on 127.0.0.1 (docs/api.md#webhooks), on both adapters: the signed
body, retries while the receiver is down, fails or hangs, each code's order, pool_low, and one deliverer for two
applications on one database. (A restart of a live server is in ``test_webhook_restart.py``.)

The application runs in-process: its loop — and the delivery worker with it — runs only while the test lets it
(``step``), so every wait is a polling loop bounded by a generous timeout, never a timed assertion."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from promocodes.config import Settings
from promocodes.domain.times import to_micros, utcnow
from promocodes.webhooks import verify_signature
from tests.helpers import Api, sql_rows
from tests.http.helpers import running
from tests.receiver import Receiver, receiving, wait_until

ANN = "ann@example.org"
FAST = {"webhook_poll_seconds": 0.05, "webhook_retry_seconds": 0.2, "webhook_timeout_seconds": 2.0}


@pytest.fixture
def app_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_body_bytes=1024 * 1024, **FAST)  # type: ignore[arg-type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as started:
        yield started


def step(api: Api) -> Callable[[], None]:
    """Let the application's loop (and its delivery worker) run for a moment."""
    return lambda: api.client.run(asyncio.sleep(0.05))  # type: ignore[attr-defined]


def settled(api: Api, hook_id: int, count: int) -> Callable[[], bool]:
    """The server has recorded ``count`` deliveries of the webhook as delivered. The receiver sees a delivery before
    the worker writes its outcome, so a test that reads the outcome waits for this too."""
    return lambda: [item["state"] for item in api.ok("webhooks/deliveries", id=hook_id)] == ["delivered"] * count


def subscribe(api: Api, receiver: Receiver, *events: str) -> dict[str, Any]:
    created: dict[str, Any] = api.ok("webhooks/create", url=receiver.url, events=list(events))
    return created


def program_with_profile(api: Api, *codes: str, **settings: Any) -> tuple[int, int]:
    loyalty_id = api.program(**settings)
    if codes:
        api.codes(loyalty_id, *codes)
    db_id = api.database()
    api.profile(db_id, ANN)
    return loyalty_id, db_id


def attach(api: Api, loyalty_id: int, db_id: int, code: str | None = None, email: str = ANN) -> str:
    fields: dict[str, Any] = {"loyalty_id": loyalty_id, "db_id": db_id, "email": email}
    if code is not None:
        fields["code"] = code
    attached: str = api.ok("promocodes/attach", **fields)["code"]
    return attached


def test_a_delivery_is_signed_and_carries_the_event(api: Api, receiver: Receiver) -> None:
    hook = subscribe(api, receiver, "code.attached", "code.activated")
    loyalty_id, db_id = program_with_profile(api, "SPRING-1")
    attach(api, loyalty_id, db_id, "SPRING-1")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="SPRING-1")

    wait_until(lambda: len(receiver.delivered()) == 2, step(api))
    history = api.ok("promocodes/history", loyalty_id=loyalty_id, code="SPRING-1")
    first = receiver.received[0]
    assert first.headers["Content-Type"] == "application/json"
    assert verify_signature(hook["secret"], first.headers["Promocodes-Signature"], first.body)
    assert not verify_signature("whsec_other", first.headers["Promocodes-Signature"], first.body)
    assert not verify_signature(hook["secret"], first.headers["Promocodes-Signature"], first.body + b" ")
    profile_id = api.ok("profiles/get", db_id=db_id, email=ANN)["profile_id"]
    assert first.event == {
        "id": str(history[1]["id"]),
        "type": "code.attached",
        "created": history[1]["time"],
        "data": {"loyalty_id": loyalty_id, "code": "SPRING-1", "profile_id": profile_id, "database_id": db_id},
    }
    assert receiver.delivered()[1]["type"] == "code.activated"
    shown = api.ok("webhooks/deliveries", id=hook["id"])
    assert [(item["state"], item["attempts"], item["last_status"]) for item in shown] == [("delivered", 1, 204)] * 2


def test_receiver_down_then_up_every_event_arrives_and_ids_reveal_duplicates(api: Api, receiver: Receiver) -> None:
    subscribe(api, receiver, "code.attached", "code.expiry_changed")
    loyalty_id, db_id = program_with_profile(api, "A-1", "A-2", "A-3")
    receiver.down()
    for code in ("A-1", "A-2", "A-3"):
        attach(api, loyalty_id, db_id, code)
        api.ok("promocodes/update", loyalty_id=loyalty_id, code=code, expire_date="2099-01-01T00:00:00Z")
    hook_id = api.ok("webhooks/list")[0]["id"]
    wait_until(lambda: any(item["attempts"] > 0 for item in api.ok("webhooks/deliveries", id=hook_id)), step(api))
    receiver.up()

    wait_until(lambda: len({event["id"] for event in receiver.delivered()}) == 6, step(api))
    wait_until(settled(api, hook_id, 6), step(api))
    delivered = receiver.delivered()
    assert Counter(event["type"] for event in {event["id"]: event for event in delivered}.values()) == {
        "code.attached": 3,
        "code.expiry_changed": 3,
    }
    failed_once = [item for item in api.ok("webhooks/deliveries", id=hook_id) if item["attempts"] > 1]
    assert failed_once and all(item["state"] == "delivered" for item in failed_once)


def test_a_hanging_receiver_times_out_and_the_delivery_is_retried(api: Api, receiver: Receiver) -> None:
    hook = subscribe(api, receiver, "code.attached")
    loyalty_id, db_id = program_with_profile(api, "H-1")
    receiver.hang_next = 1
    attach(api, loyalty_id, db_id, "H-1")

    wait_until(lambda: len(receiver.delivered()) == 1, step(api))
    wait_until(settled(api, hook["id"], 1), step(api))
    hung, retried = receiver.received
    assert hung.status is None and retried.status == 204 and hung.body == retried.body  # the same bytes
    (delivery,) = api.ok("webhooks/deliveries", id=hook["id"])
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)


def test_one_codes_events_arrive_in_order_even_when_the_first_failed(api: Api, receiver: Receiver) -> None:
    hook = subscribe(api, receiver, "code.attached", "code.activated", "code.deactivated")
    loyalty_id, db_id = program_with_profile(api, "O-1")
    receiver.fail_next = 1
    attach(api, loyalty_id, db_id, "O-1")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="O-1")
    api.ok("promocodes/update", loyalty_id=loyalty_id, code="O-1", activated=False)

    wait_until(lambda: len(receiver.delivered()) == 3, step(api))
    wait_until(settled(api, hook["id"], 3), step(api))
    assert receiver.received[0].status == 500 and receiver.received[0].event["type"] == "code.attached"
    assert [event["type"] for event in receiver.delivered()] == ["code.attached", "code.activated", "code.deactivated"]
    attempts = sorted(item["attempts"] for item in api.ok("webhooks/deliveries", id=hook["id"]))
    assert attempts == [1, 1, 2]


def test_pool_low_is_delivered_when_the_free_codes_cross_below_the_threshold(api: Api, receiver: Receiver) -> None:
    subscribe(api, receiver, "program.pool_low")
    loyalty_id, db_id = program_with_profile(api, "P-1", "P-2", "P-3", pool_low_threshold=2)
    api.profile(db_id, "bob@example.org")
    attach(api, loyalty_id, db_id)  # 3 → 2 free: not below 2
    attach(api, loyalty_id, db_id, email="bob@example.org")  # 2 → 1: crossed

    wait_until(lambda: len(receiver.delivered()) == 1, step(api))
    (event,) = receiver.delivered()
    assert event["type"] == "program.pool_low"
    assert event["data"] == {
        "loyalty_id": loyalty_id,
        "code": None,
        "profile_id": None,
        "database_id": None,
        "free": 1,
        "threshold": 2,
    }


def test_a_refused_change_sends_nothing(api: Api, receiver: Receiver) -> None:
    hook = subscribe(api, receiver, "code.activated", "code.attached")
    loyalty_id, db_id = program_with_profile(api, "R-1")
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="R-1")["error"] == 409
    attach(api, loyalty_id, db_id, "R-1")  # a change that happened, as a marker
    wait_until(lambda: len(receiver.delivered()) == 1, step(api))
    assert [event["type"] for event in receiver.delivered()] == ["code.attached"]
    assert len(api.ok("webhooks/deliveries", id=hook["id"])) == 1


def test_two_applications_on_one_database_deliver_each_event_once(
    api: Api, receiver: Receiver, database_url: str
) -> None:
    subscribe(api, receiver, "code.attached", "code.detached")
    codes = [f"T-{n}" for n in range(8)]
    loyalty_id, db_id = program_with_profile(api, *codes)
    with running(database_url, **FAST) as other:
        for code in codes:
            attach(api, loyalty_id, db_id, code)
            api.ok("promocodes/detach", loyalty_id=loyalty_id, db_id=db_id, email=ANN, code=code)

        def both() -> None:
            step(api)()
            step(other)()

        wait_until(lambda: len(receiver.delivered()) >= 16, both)
        for _ in range(10):  # a while longer: a second deliverer would send some again now
            both()
    ids = [event["id"] for event in receiver.delivered()]
    assert len(ids) == 16 and len(set(ids)) == 16


def test_a_delivery_past_its_24_hours_is_marked_failed_and_counted(
    api: Api, receiver: Receiver, database_url: str
) -> None:
    hook = subscribe(api, receiver, "code.attached")
    loyalty_id, db_id = program_with_profile(api, "F-1")
    receiver.down()
    attach(api, loyalty_id, db_id, "F-1")
    day_ago = to_micros(utcnow() - timedelta(hours=24))
    api.client.run(sql_rows(database_url, "UPDATE webhook_deliveries SET created = $1", day_ago))  # type: ignore[attr-defined]

    wait_until(lambda: api.ok("webhooks/deliveries", id=hook["id"])[0]["state"] == "failed", step(api))
    (delivery,) = api.ok("webhooks/deliveries", id=hook["id"])
    # One attempt, or two: the worker may have tried once (and scheduled a retry) before the test moved the
    # delivery's creation a day back; the attempt made past the 24 hours is always the last.
    assert delivery["attempts"] in (1, 2) and delivery["last_status"] is None and delivery["last_error"]
    assert delivery["finished"] and delivery["next_attempt"] == ""
    metrics = api.client.get("/metrics").text
    assert 'promocodes_webhook_deliveries_total{outcome="failed"}' in metrics
