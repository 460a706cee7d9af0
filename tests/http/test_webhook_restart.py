"""Webhooks across a restart of a live server (docs/api.md#webhooks): events recorded while the receiver was down
are in the database's outbox, and the next server delivers them — once each, with two workers of which one
delivers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.helpers import sql_rows
from tests.live import LiveServer, serving
from tests.receiver import receiving, wait_until

FAST = {
    "PROMOCODES_WEBHOOK_POLL_SECONDS": "0.1",
    "PROMOCODES_WEBHOOK_RETRY_SECONDS": "0.2",
    "PROMOCODES_WEBHOOK_TIMEOUT_SECONDS": "5",
}


def ok(client: httpx2.Client, method: str, **fields: Any) -> Any:
    body = client.post(f"/api/v1.1/{method}", json=fields).json()
    assert body["error"] == 0, body
    return body["data"]


def sync_client(server: LiveServer) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx2.Client(base_url=server.base_url, headers=headers, timeout=120.0, trust_env=False)


@pytest.mark.slow
def test_events_left_undelivered_are_delivered_after_a_restart_once_each(database_url: str, tmp_path: Path) -> None:
    codes = ["LIVE-1", "LIVE-2", "LIVE-3"]
    with receiving() as receiver:
        receiver.down()
        first = serving(database_url, tmp_path / "first.log", workers=1, environment=FAST)
        with first as server, sync_client(server) as client:
            ok(client, "webhooks/create", url=receiver.url, events=["code.attached", "code.activated"])
            loyalty_id = ok(client, "promocodes/programs/create", name="Live")["id"]
            ok(client, "promocodes/import", loyalty_id=loyalty_id, codes=codes)
            db_id = ok(client, "databases/create", name="main")["id"]
            ok(client, "profiles/import", db_id=db_id, email="ann@example.org", data={})
            for code in codes:
                ok(
                    client,
                    "promocodes/attach",
                    loyalty_id=loyalty_id,
                    db_id=db_id,
                    email="ann@example.org",
                    code=code,
                )
                ok(client, "promocodes/activate", loyalty_id=loyalty_id, code=code)

        pending = sql_rows(database_url, "SELECT count(*) AS n FROM webhook_deliveries WHERE state = 'pending'")
        assert asyncio.run(pending)[0]["n"] == 6
        receiver.up()
        with serving(database_url, tmp_path / "second.log", workers=2, environment=FAST):
            wait_until(lambda: len(receiver.delivered()) >= 6, lambda: time.sleep(0.1), timeout=120)
            for _ in range(10):  # a while longer: a second deliverer would send some again now
                time.sleep(0.1)
    delivered = receiver.delivered()
    assert len(delivered) == 6 and len({event["id"] for event in delivered}) == 6
    by_code: dict[str, list[str]] = {}
    for event in delivered:
        by_code.setdefault(event["data"]["code"], []).append(event["type"])
    assert by_code == {code: ["code.attached", "code.activated"] for code in codes}
