"""Activations arriving together (store.redemptions): each keeps its own outcome, its own event and its own
webhook deliveries, whether the PostgreSQL store wrote it in a group, alone, or alone after its group failed.

The outcome tests run on both adapters (SQLite's writer groups concurrent operations its own way); the group's own
behaviour (that groups form, the fallback, two processes' groups racing) is PostgreSQL's. Nothing here measures
time: every assertion is about outcomes and the rows left in the database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

import pytest

from promocodes.domain.times import to_micros
from promocodes.errors import StorageUnavailable
from promocodes.models import Actor, CodeEventKind, Outcome, WebhookEventType
from promocodes.service.idempotency import MICROS_PER_HOUR
from promocodes.store import Store, open_store
from promocodes.store import codes as store_codes
from promocodes.store.claims import CLAIM, Answer, Claim, Replay
from promocodes.store.postgres import PostgresStore
from promocodes.store.redemptions import Redemption
from tests.helpers import ACTOR, save_profile, sql_rows
from tests.store.test_concurrency import NOW, history, setup

pytestmark = pytest.mark.anyio

CASHIER = Actor(token_id=None, token_name="cashier")
FRESH = [f"FRESH-{n:02d}" for n in range(40)]
# What each of the other requests must be told, whatever group it lands in.
REFUSED = {
    "USED": Outcome.ALREADY_ACTIVATED,
    "LOOSE": Outcome.NOT_ATTACHED,
    "OLD": Outcome.EXPIRED,
    "NOWHERE": Outcome.NO_CODE,
}


async def mixed_program(store: Store) -> tuple[int, int, int]:
    """A program with the 40 FRESH codes attached, USED attached and activated, LOOSE free, OLD attached but expired,
    and MINE attached to a first profile; ``(program_id, first profile pk, second profile pk)``."""
    program_id, db_id = await setup(store, [*FRESH, "USED", "LOOSE", "OLD", "MINE"])
    first = await save_profile(store, db_id, "a" * 24, "first@example.org", [], {}, NOW)
    second = await save_profile(store, db_id, "b" * 24, "second@example.org", [], {}, NOW)
    for code in [*FRESH, "USED", "OLD", "MINE"]:
        attached = await store.attach_code(program_id, code, code, first.pk, False, False, NOW, actor=ACTOR)
        assert attached is Outcome.DONE
    assert await store.activate(program_id, "USED", None, NOW, actor=ACTOR) is Outcome.DONE
    past = NOW - timedelta(days=1)
    assert await store.update_code(program_id, "OLD", None, past, True, None, NOW, actor=ACTOR) is Outcome.DONE
    return program_id, first.pk, second.pk


async def redeem_all(store: Store, program_id: int, first: int, second: int) -> dict[str, list[Outcome]]:
    """Every request at once — each FRESH code twice, the refused ones, MINE for the wrong and then the right
    profile — and each request's outcome, by code."""
    requests: list[tuple[str, int | None]] = [(code, None) for code in FRESH * 2]
    requests += [(code, None) for code in REFUSED]
    requests += [("MINE", second), ("MINE", first)]
    outcomes = await asyncio.gather(
        *(store.activate(program_id, code, pk, NOW, actor=CASHIER) for code, pk in requests)
    )
    by_code: dict[str, list[Outcome]] = {}
    for (code, _), outcome in zip(requests, outcomes, strict=True):
        by_code.setdefault(code, []).append(outcome)
    return by_code


async def check_outcomes(store: Store, program_id: int, by_code: dict[str, list[Outcome]]) -> None:
    for code in FRESH:
        assert Counter(by_code[code]) == {Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 1}, code
    for code, refusal in REFUSED.items():
        assert by_code[code] == [refusal], code
    # MINE for the second profile is refused, whether it ran before or after the first profile's activation.
    assert by_code["MINE"][0] in (Outcome.ATTACHED_ELSEWHERE, Outcome.ALREADY_ACTIVATED)
    assert by_code["MINE"][1] is Outcome.DONE
    # One event per activation that happened, in the name of whoever made it, and the profile it was bound to.
    for code in [*FRESH, "MINE"]:
        activations = [
            event for event in await history(store, program_id, code) if event.event is CodeEventKind.ACTIVATED
        ]
        assert [(event.token_name, event.profile_id) for event in activations] == [("cashier", "a" * 24)], code
    for code in REFUSED.keys() - {"NOWHERE"}:
        events = await history(store, program_id, code)
        assert all(event.token_name != "cashier" for event in events), code


async def test_activations_arriving_together_each_get_their_own_outcome(store: Store) -> None:
    program_id, first, second = await mixed_program(store)

    by_code = await redeem_all(store, program_id, first, second)

    await check_outcomes(store, program_id, by_code)
    if isinstance(store, PostgresStore):
        assert store._redemptions is not None and store._redemptions.groups_written >= 1, "no group was formed"


async def test_each_activation_written_in_a_group_owes_its_webhook_deliveries(store: Store, database_url: str) -> None:
    program_id, first, second = await mixed_program(store)
    account_id = await store.ensure_account("acme", NOW)
    types = [WebhookEventType("code.activated")]
    hooks = [await store.create_webhook(account_id, f"https://h{n}.example/", types, "", "s", NOW) for n in (1, 2)]

    by_code = await redeem_all(store, program_id, first, second)

    activated = sum(outcomes.count(Outcome.DONE) for outcomes in by_code.values())
    assert activated == 41
    rows = await sql_rows(
        database_url,
        "SELECT d.webhook_id, e.code_id, e.token_name FROM webhook_deliveries d "
        "JOIN code_events e ON e.id = d.event_id WHERE e.event = 'activated'",
    )
    assert Counter(row["webhook_id"] for row in rows) == {hook.id: activated for hook in hooks}
    assert {row["token_name"] for row in rows} == {"cashier"}
    assert len({(row["webhook_id"], row["code_id"]) for row in rows}) == 2 * activated


@pytest.fixture
async def postgres_store(store: Store) -> PostgresStore:
    if not isinstance(store, PostgresStore):
        pytest.skip("groups of activations are PostgreSQL's")
    return store


async def test_a_failed_group_runs_each_activation_alone(
    postgres_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group whose transaction fails (here: made to) commits nothing; each of its requests then runs alone and
    gets the outcome it would have had — never the group's failure."""
    program_id, first, second = await mixed_program(postgres_store)
    failed: list[int] = []

    async def failing(conn: object, group: list[Redemption]) -> set[int]:
        failed.append(len(group))
        raise StorageUnavailable("made to fail")

    monkeypatch.setattr(store_codes, "redeem_group", failing)

    by_code = await redeem_all(postgres_store, program_id, first, second)

    assert failed and max(failed) > 1, "no group was tried"
    assert postgres_store._redemptions is not None and postgres_store._redemptions.groups_written == 0
    await check_outcomes(postgres_store, program_id, by_code)


@pytest.fixture
async def workers(postgres_store: PostgresStore, database_url: str) -> AsyncIterator[list[Store]]:
    """Three stores with pools of their own on one database, as three server processes have."""
    opened = [postgres_store]
    try:
        for _ in range(2):
            other = open_store(database_url, pool_size=6)
            await other.open()
            opened.append(other)
        yield opened
    finally:
        for other in opened[1:]:
            await other.close()


async def test_groups_of_several_processes_racing_for_the_same_codes_activate_each_once(
    workers: list[Store],
) -> None:
    """Three processes each activate the same 60 codes, all at once, in groups of their own: every code is
    activated exactly once, with one event, and every other request is told it was already activated."""
    codes = [f"RACE-{n:02d}" for n in range(60)]
    program_id, db_id = await setup(workers[0], codes)
    holder = await save_profile(workers[0], db_id, "c" * 24, "holder@example.org", [], {}, NOW)
    for code in codes:
        assert await workers[0].attach_code(program_id, code, code, holder.pk, False, False, NOW, actor=ACTOR) is (
            Outcome.DONE
        )

    outcomes = await asyncio.gather(
        *(
            worker.activate(program_id, code, None, NOW, actor=CASHIER)
            for round_ in range(3)
            for worker in workers
            for code in (codes if round_ % 2 == 0 else codes[::-1])
        )
    )

    per_code: dict[str, Counter[Outcome]] = {code: Counter() for code in codes}
    for index, outcome in enumerate(outcomes):
        round_, rest = divmod(index, len(workers) * len(codes))
        ordered = codes if round_ % 2 == 0 else codes[::-1]
        per_code[ordered[rest % len(codes)]][outcome] += 1
    for code, counted in per_code.items():
        assert counted == {Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 8}, code
        activations = [e for e in await history(workers[0], program_id, code) if e.event is CodeEventKind.ACTIVATED]
        assert len(activations) == 1, code
    assert (await workers[0].program_stats(program_id, NOW)).activated == len(codes)


async def test_an_activation_with_an_idempotency_key_keeps_its_answer_among_grouped_ones(store: Store) -> None:
    """Keyed requests arriving among unkeyed ones: each keyed request's answer is written with its change (so its
    retry is a replay, not a second activation), which a group — writing for many requests — could not do."""
    program_id, _, _ = await mixed_program(store)
    account_id = await store.ensure_account("acme", NOW)
    now_us = to_micros(NOW)

    def render(outcome: Outcome) -> Answer:
        return Answer(0 if outcome is Outcome.DONE else 409, outcome.value, "{}")

    async def keyed(code: str) -> Claim:
        claim = Claim(account_id, f"key-{code}", f"activate {code}", now_us, now_us - 24 * MICROS_PER_HOUR)
        token = CLAIM.set(claim)
        claim.render = render
        try:
            render(await store.activate(program_id, code, None, NOW, actor=CASHIER))
        finally:
            CLAIM.reset(token)
        return claim

    plain = [store.activate(program_id, code, None, NOW, actor=CASHIER) for code in FRESH[::2]]
    results = await asyncio.gather(*(keyed(code) for code in FRESH[1::2]), *plain)

    claims = [result for result in results if isinstance(result, Claim)]
    assert len(claims) == 20 and all(claim.recorded for claim in claims)
    assert [result for result in results if not isinstance(result, Claim)] == [Outcome.DONE] * 20
    for claim, code in zip(claims, FRESH[1::2], strict=True):
        retry = Claim(account_id, claim.key, claim.fingerprint, now_us, now_us - 24 * MICROS_PER_HOUR)
        token = CLAIM.set(retry)
        retry.render = render
        try:
            with pytest.raises(Replay) as replayed:
                await store.activate(program_id, code, None, NOW, actor=CASHIER)
        finally:
            CLAIM.reset(token)
        assert replayed.value.answer == render(Outcome.DONE)


async def test_a_paused_program_refuses_activations_judged_in_their_own_transaction(store: Store) -> None:
    """The service reads the program before it asks the store; a pause committed in between must still refuse the
    activation: the store judges the program's state in the activation's own transaction (alone or in a group)."""
    program_id, _, _ = await mixed_program(store)
    account_id = await store.ensure_account("acme", NOW)
    paused = await store.update_program(account_id, program_id, {"active": False}, lambda program: False)
    assert paused and not paused.active

    alone = await store.activate(program_id, FRESH[0], None, NOW, actor=CASHIER)
    together = await asyncio.gather(
        *(store.activate(program_id, code, None, NOW, actor=CASHIER) for code in [*FRESH[1:], "NOWHERE"])
    )

    assert alone is Outcome.PROGRAM_INACTIVE
    assert together == [Outcome.PROGRAM_INACTIVE] * (len(FRESH) - 1) + [Outcome.NO_CODE]
    assert (await store.program_stats(program_id, NOW)).activated == 1  # USED, activated before the pause


async def test_activations_are_judged_against_their_program_alone_and_together(store: Store) -> None:
    """The store judges what the service used to read first: the caller's account must hold the program, a
    multiple-usage program needs the profile, and the code is looked up by the program's case rule — two spellings
    of one code arriving together redeem it once."""
    account_id = await store.ensure_account("acme", NOW)
    other = await store.ensure_account("other", NOW)
    folding = await store.create_program(account_id, {"name": "Folding", "case_sensitive": False}, NOW)
    universal = await store.create_program(account_id, {"name": "Universal", "multiple_usage": True}, NOW)
    codes = [f"Fold-{n:02d}" for n in range(30)]
    await store.import_codes(folding.id, [(code, code.casefold()) for code in codes], NOW, actor=ACTOR)
    await store.import_codes(universal.id, [("ALL", "ALL")], NOW, actor=ACTOR)
    database = await store.create_database(account_id, "main", NOW)
    holder = await save_profile(store, database.id, "e" * 24, "holder@example.org", [], {}, NOW)
    for code in codes:
        key = code.casefold()
        assert await store.attach_code(folding.id, code, key, holder.pk, False, False, NOW, actor=ACTOR) is Outcome.DONE

    def activate(program_id: int, code: str, account: int = account_id) -> Awaitable[Outcome]:
        return store.activate(program_id, code, None, NOW, actor=CASHIER, account_id=account)

    assert await activate(folding.id, codes[0].upper(), other) is Outcome.NO_PROGRAM
    assert await activate(universal.id, "ALL") is Outcome.NEEDS_PROFILE
    alone = await activate(folding.id, codes[0].upper())
    together = await asyncio.gather(
        *(activate(folding.id, spelling) for code in codes[1:] for spelling in (code.upper(), code.lower())),
        activate(folding.id, codes[1], other),
        activate(universal.id, "ALL"),
    )

    assert alone is Outcome.DONE
    pairs = [Counter(together[i : i + 2]) for i in range(0, 2 * (len(codes) - 1), 2)]
    assert pairs == [Counter({Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 1})] * (len(codes) - 1)
    assert together[-2:] == [Outcome.NO_PROGRAM, Outcome.NEEDS_PROFILE]
    assert (await store.program_stats(folding.id, NOW)).activated == len(codes)


async def test_a_queue_of_one_code_asked_many_times_still_answers_each(store: Store) -> None:
    """Many requests for one code among others: one activation, every repeat told it was already activated, and the
    other codes activated too (the queue's repeats wait for later groups without holding the others back)."""
    program_id, _, _ = await mixed_program(store)
    outcomes = await asyncio.gather(
        *(store.activate(program_id, FRESH[0], None, NOW, actor=CASHIER) for _ in range(600)),
        *(store.activate(program_id, code, None, NOW, actor=CASHIER) for code in FRESH[1:]),
    )
    assert Counter(outcomes[:600]) == {Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 599}
    assert outcomes[600:] == [Outcome.DONE] * (len(FRESH) - 1)
