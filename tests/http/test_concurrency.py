"""The concurrency acceptance test through the whole stack: a real ``promocodes serve`` with two worker processes,
hammered over HTTP by hundreds of simultaneous requests, on SQLite and on PostgreSQL.

Nothing here measures time; the assertions are about the answers and the state the server reports afterwards.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.live import LiveServer, serving

pytestmark = pytest.mark.slow  # live servers / fuzzers: left out of the quick loop (-m 'not slow')


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serving(database_url, tmp_path / "server.log", workers=2) as server:
        yield server


async def call(client: httpx2.AsyncClient, method: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1.1/{method}", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ok(client: httpx2.AsyncClient, method: str, **fields: Any) -> Any:
    body = await call(client, method, **fields)
    assert body["error"] == 0, body
    return body["data"]


async def program_with_codes(client: httpx2.AsyncClient, codes: list[str]) -> int:
    loyalty_id: int = (await ok(client, "promocodes/programs/create", name="Load"))["id"]
    items = await ok(client, "promocodes/import", loyalty_id=loyalty_id, codes=codes)
    assert [item["error"] for item in items] == [0] * len(codes)
    return loyalty_id


async def warm_up(client: httpx2.AsyncClient, loyalty_id: int) -> None:
    """A burst of reads first: both workers open their database connections and the client its sockets, so that
    the race that follows starts on all of them at once instead of on the few opened so far."""
    answers = await asyncio.gather(
        *(call(client, "promocodes/programs/get", loyalty_id=loyalty_id) for _ in range(300))
    )
    assert {answer["error"] for answer in answers} == {0}


@pytest.mark.anyio
async def test_simultaneous_activations_of_one_code(live_server: LiveServer) -> None:
    async with live_server.client() as client:
        loyalty_id = await program_with_codes(client, ["ONE-CODE"])
        db_id = (await ok(client, "databases/create", name="main"))["id"]
        await ok(client, "profiles/import", db_id=db_id, email="ann@example.org", data={})
        attached = await ok(client, "promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org")
        assert attached == {"code": "ONE-CODE"}
        await warm_up(client, loyalty_id)

        answers = await asyncio.gather(
            *(call(client, "promocodes/activate", loyalty_id=loyalty_id, code="ONE-CODE") for _ in range(100))
        )

        assert Counter(answer["error"] for answer in answers) == {0: 1, 409: 99}
        assert {answer["error_text"] for answer in answers if answer["error"] == 409} == {
            "Promo code already activated"
        }
        state = await ok(client, "promocodes/get", loyalty_id=loyalty_id, code="ONE-CODE")
        assert (state["is_attached"], state["is_activated"]) == (True, True)


@pytest.mark.anyio
async def test_simultaneous_attaches_from_the_pool(live_server: LiveServer) -> None:
    codes = [f"POOL-{index:03d}" for index in range(200)]
    emails = [f"user{index}@example.org" for index in range(300)]
    async with live_server.client() as client:
        loyalty_id = await program_with_codes(client, codes)
        db_id = (await ok(client, "databases/create", name="main"))["id"]
        created = await asyncio.gather(
            *(ok(client, "profiles/import", db_id=db_id, email=email, data={}) for email in emails)
        )
        await warm_up(client, loyalty_id)
        profile_ids = {email: data["profile_id"] for email, data in zip(emails, created, strict=True)}
        assert len(set(profile_ids.values())) == 300

        answers = await asyncio.gather(
            *(call(client, "promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email=email) for email in emails)
        )

        won = {
            email: answer["data"]["code"] for email, answer in zip(emails, answers, strict=True) if answer["error"] == 0
        }
        refused = [answer for answer in answers if answer["error"] != 0]
        assert len(won) == 200
        assert sorted(won.values()) == codes  # 200 distinct codes: each free code handed out once
        assert len(refused) == 100
        assert {(answer["error"], answer["error_text"]) for answer in refused} == {(409, "No free promo codes")}

        exported = await ok(client, "promocodes/export_all", loyalty_id=loyalty_id)
        assert len(exported) == 200
        assert sum(1 for item in exported if "attached" in item) == 200
        assert sorted(item["code"] for item in exported) == codes

        # Each code is bound to the profile that was told it got it.
        states = await asyncio.gather(
            *(ok(client, "promocodes/get", loyalty_id=loyalty_id, code=code) for code in won.values())
        )
        for (email, code), state in zip(won.items(), states, strict=True):
            assert (state["code"], state["profile_id"], state["database_id"]) == (code, profile_ids[email], db_id)
