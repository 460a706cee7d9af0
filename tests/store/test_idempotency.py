"""The store's part of idempotent retries (docs/api.md#idempotent-retries), on both adapters: an operation run under
a request's claim keeps its answer in its own transaction, replays or refuses a key that holds one, and keeps
nothing when it keeps no change; answers expire, are scoped to the account and are purged. The race of many
requests with one key is in tests/store/test_concurrency.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from promocodes.domain.times import to_micros
from promocodes.errors import Conflict, IdempotencyKeyReused, StorageUnavailable
from promocodes.models import Match, MatchMode, Profile
from promocodes.service.idempotency import MICROS_PER_HOUR, IdempotentRetries, purging
from promocodes.store import Store
from promocodes.store.claims import CLAIM, Answer, Claim, Render, Replay, StoredAnswer
from promocodes.store.profiles import ProfileData

pytestmark = pytest.mark.anyio

T = TypeVar("T")
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW_US = to_micros(NOW)


def claim_of(account_id: int, key: str = "k-1", fingerprint: str = "f-1", created: int = NOW_US) -> Claim:
    return Claim(account_id, key, fingerprint, created=created, expired_before=created - 24 * MICROS_PER_HOUR)


def answer_of(data: object) -> Answer:
    return Answer(0, "Successful operation", f'{{"data":{data}}}')


async def under(claim: Claim, render: Render | None, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` as the service would, in a request holding ``claim``, with ``render`` for its next write."""
    token = CLAIM.set(claim)
    claim.render = render
    try:
        return await call()
    finally:
        CLAIM.reset(token)


def database_answer(database: Any) -> Answer:
    return answer_of(database.id)


async def test_an_operation_under_a_claim_keeps_its_answer(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    claim = claim_of(account_id)
    database = await under(claim, database_answer, lambda: store.create_database(account_id, "main", NOW))
    assert claim.recorded
    assert await store.find_answer(claim_of(account_id)) == StoredAnswer("f-1", answer_of(database.id))


async def test_a_key_holding_the_same_request_replays_and_executes_nothing(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    first = await under(claim_of(account_id), database_answer, lambda: store.create_database(account_id, "a", NOW))
    retry = claim_of(account_id)
    with pytest.raises(Replay) as caught:
        await under(retry, database_answer, lambda: store.create_database(account_id, "a", NOW))
    assert caught.value.answer == answer_of(first.id)
    assert not retry.recorded
    assert [database.name for database in await store.list_databases(account_id)] == ["a"]


async def test_a_key_holding_another_request_is_409_and_executes_nothing(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    await under(claim_of(account_id), database_answer, lambda: store.create_database(account_id, "a", NOW))
    with pytest.raises(IdempotencyKeyReused):
        other = claim_of(account_id, fingerprint="f-2")
        await under(other, database_answer, lambda: store.create_database(account_id, "b", NOW))
    assert [database.name for database in await store.list_databases(account_id)] == ["a"]


async def test_a_result_that_is_not_the_answer_keeps_nothing_and_only_the_next_write_is_claimed(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    claim = claim_of(account_id)

    async def two_writes() -> None:
        await store.create_database(account_id, "first", NOW)  # takes the render, which answers "not yet"
        await store.create_database(account_id, "second", NOW)  # runs plain

    await under(claim, lambda database: None, two_writes)
    assert not claim.recorded
    assert await store.find_answer(claim) is None
    assert [database.name for database in await store.list_databases(account_id)] == ["first", "second"]


async def test_an_operation_that_raises_keeps_no_answer_and_no_change(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    database = await store.create_database(account_id, "main", NOW)
    claim = claim_of(account_id)

    def refuse(found: list[Profile]) -> ProfileData:
        raise Conflict("refused by the rule")

    with pytest.raises(Conflict, match="refused by the rule"):
        match = Match(MatchMode.EMAIL, "ann@example.org")
        await under(claim, answer_of, lambda: store.upsert_profile(database.id, match, refuse, NOW))
    assert not claim.recorded
    assert await store.find_answer(claim) is None


async def test_an_answer_that_cannot_be_written_takes_the_change_with_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = await store.ensure_account("acme", NOW)

    async def broken(*args: object) -> bool:
        raise StorageUnavailable("The database is unavailable; retry later")

    monkeypatch.setattr("promocodes.store.claims.insert_answer", broken)
    with pytest.raises(StorageUnavailable):
        await under(claim_of(account_id), database_answer, lambda: store.create_database(account_id, "a", NOW))
    assert await store.list_databases(account_id) == []


async def test_an_expired_answer_counts_as_absent_and_is_replaced(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    await under(claim_of(account_id), database_answer, lambda: store.create_database(account_id, "a", NOW))
    a_day_later = claim_of(account_id, fingerprint="f-2", created=NOW_US + 24 * MICROS_PER_HOUR)
    assert await store.find_answer(a_day_later) is None
    second = await under(a_day_later, database_answer, lambda: store.create_database(account_id, "b", NOW))
    assert await store.find_answer(a_day_later) == StoredAnswer("f-2", answer_of(second.id))


async def test_keys_are_scoped_to_the_account(store: Store) -> None:
    acme = await store.ensure_account("acme", NOW)
    other = await store.ensure_account("other", NOW)
    await under(claim_of(acme), database_answer, lambda: store.create_database(acme, "a", NOW))
    theirs = claim_of(other, fingerprint="f-2")
    assert await store.find_answer(theirs) is None
    await under(theirs, database_answer, lambda: store.create_database(other, "b", NOW))
    assert theirs.recorded


async def test_a_refusal_is_recorded_once_and_the_first_answer_wins(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    refusal = Answer(404, "Program 7 not found", '{"data":null}')
    assert await store.record_answer(claim_of(account_id), refusal) is None
    other = Answer(409, "Program 7 is inactive", '{"data":null}')
    assert await store.record_answer(claim_of(account_id, fingerprint="f-2"), other) == StoredAnswer("f-1", refusal)
    a_day_later = claim_of(account_id, fingerprint="f-2", created=NOW_US + 24 * MICROS_PER_HOUR)
    assert await store.record_answer(a_day_later, other) is None  # the expired one is replaced
    assert await store.find_answer(a_day_later) == StoredAnswer("f-2", other)


async def test_the_purge_deletes_expired_answers_only(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    old = claim_of(account_id, key="old", created=NOW_US - 25 * MICROS_PER_HOUR)
    live = claim_of(account_id, key="live", created=NOW_US - 23 * MICROS_PER_HOUR)
    for claim in (old, live):
        assert await store.record_answer(claim, answer_of(1)) is None
    await store.purge_answers(NOW_US - 24 * MICROS_PER_HOUR)
    everything_before = NOW_US - 100 * MICROS_PER_HOUR
    old.expired_before = live.expired_before = everything_before  # look up expired rows too
    assert await store.find_answer(old) is None
    assert await store.find_answer(live) == StoredAnswer("f-1", answer_of(1))


async def test_the_app_purges_in_the_background(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    expired = claim_of(account_id, created=to_micros(datetime.now(UTC)) - 25 * MICROS_PER_HOUR)
    assert await store.record_answer(expired, answer_of(1)) is None
    expired.expired_before = 0  # see it even though it has expired
    async with purging(IdempotentRetries(store, hours=24), every=0):
        for _ in range(10_000):  # a bound on the wait, not a measurement: the purge runs at the first await
            if await store.find_answer(expired) is None:
                break
            await asyncio.sleep(0.001)
    assert await store.find_answer(expired) is None
