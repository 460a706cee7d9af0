"""The locks under real parallelism, on both adapters.

PostgreSQL: one store with a pool larger than the fan-out of most tests, so the gathered operations run on
distinct connections at the same time. SQLite: several stores on the SAME file, each with its own database
thread and connection, so the operations really contend for SQLite's write lock (within one store they would
merely queue on its thread). Work is dealt round-robin over the stores.

Nothing here measures time: every assertion is about the outcomes and the state left in the database.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from promocodes.domain.templates import Template
from promocodes.domain.times import format_rfc3339, to_micros
from promocodes.errors import BadRequest, Conflict
from promocodes.models import (
    CodeEvent,
    CodeEventKind,
    Outcome,
    Principal,
    ProgramStats,
    Role,
)
from promocodes.schemas import ProfileImport, ProgramUpdate
from promocodes.service.idempotency import MICROS_PER_HOUR
from promocodes.service.profiles import ProfileService, match_from
from promocodes.service.programs import ProgramService
from promocodes.store import Store, open_store
from promocodes.store.claims import CLAIM, Answer, Claim, Replay
from promocodes.store.events import MICROS_PER_DAY
from promocodes.store.postgres import PostgresStore
from tests.helpers import ACTOR, drawing, save_profile

pytestmark = pytest.mark.anyio

T = TypeVar("T")

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW_US = to_micros(NOW)
SQLITE_STORES = 6
POSTGRES_POOL = 40


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[list[Store]]:
    """Independent connections to one migrated database: several SQLite stores, or one wide PostgreSQL pool."""
    opened: list[Store] = []
    try:
        if database_url.startswith("sqlite"):
            for _ in range(SQLITE_STORES):
                store = open_store(database_url)
                await store.open()
                opened.append(store)
        else:
            store = PostgresStore(database_url, pool_size=POSTGRES_POOL)
            await store.open()
            opened.append(store)
            # The pool connects lazily; open every connection now so that the races start on all of them at once.
            await asyncio.gather(*(store.count_tokens() for _ in range(POSTGRES_POOL)))
        await opened[0].migrate()
        yield opened
    finally:
        for store in opened:
            await store.close()


async def fan_out(stores: Sequence[Store], count: int, call: Callable[[Store, int], Awaitable[T]]) -> list[T]:
    """Run ``call(store, index)`` ``count`` times at once, dealing the calls round-robin over the stores."""
    return list(await asyncio.gather(*(call(stores[index % len(stores)], index) for index in range(count))))


async def setup(store: Store, codes: Sequence[str] = (), **settings: Any) -> tuple[int, int]:
    """A program holding ``codes`` and a database: ``(program_id, db_id)``."""
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "Load", **settings}, NOW)
    if codes:
        outcome = await store.import_codes(program.id, [(code, code) for code in codes], NOW, actor=ACTOR)
        assert len(outcome.inserted) == len(codes)
    database = await store.create_database(account_id, "main", NOW)
    return program.id, database.id


async def make_profiles(stores: Sequence[Store], db_id: int, count: int) -> list[int]:
    async def one(store: Store, index: int) -> int:
        saved = await save_profile(store, db_id, secrets.token_hex(12), f"user{index}@example.org", [], {}, NOW)
        return saved.pk

    return await fan_out(stores, count, one)


async def bindings(store: Store, program_id: int) -> dict[str, tuple[int, int | None]]:
    """Every code of the program → ``(attached_count, bound profile or None)``, read back from the database."""
    result: dict[str, tuple[int, int | None]] = {}
    async for item in store.export_codes(program_id, page_size=50):
        state = await store.code_state(program_id, item.code)
        assert state is not None
        result[item.code] = (state.attached_count, None if state.latest is None else state.latest.profile_pk)
    return result


async def test_concurrent_activations_of_one_code(stores: list[Store]) -> None:
    program_id, db_id = await setup(stores[0], ["ONE"])
    (holder,) = await make_profiles(stores, db_id, 1)
    assert await stores[0].attach_code(program_id, "ONE", "ONE", holder, False, False, NOW, actor=ACTOR) is Outcome.DONE

    outcomes = await fan_out(stores, 100, lambda store, _: store.activate(program_id, "ONE", None, NOW, actor=ACTOR))

    assert Counter(outcomes) == {Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 99}
    state = await stores[0].code_state(program_id, "ONE")
    assert state is not None
    assert (state.attached_count, state.activated_count) == (1, 1)


async def test_concurrent_activations_of_many_codes(stores: list[Store]) -> None:
    """The same race on 20 codes at once, 25 activations each, interleaved: more chances for two to overlap."""
    codes = [f"A{index:02d}" for index in range(20)]
    program_id, db_id = await setup(stores[0], codes)
    pks = await make_profiles(stores, db_id, 20)
    for code, pk in zip(codes, pks, strict=True):
        assert await stores[0].attach_code(program_id, code, code, pk, False, False, NOW, actor=ACTOR) is Outcome.DONE

    outcomes = await fan_out(
        stores, 500, lambda store, index: store.activate(program_id, codes[index % 20], None, NOW, actor=ACTOR)
    )

    for number, code in enumerate(codes):
        mine = Counter(outcomes[number::20])
        assert mine == {Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 24}, code
    assert (await stores[0].program_stats(program_id, NOW)).activated == 20


async def test_concurrent_pool_attaches_never_share_a_code(stores: list[Store]) -> None:
    codes = [f"POOL-{index:03d}" for index in range(200)]
    program_id, db_id = await setup(stores[0], codes)
    pks = await make_profiles(stores, db_id, 300)

    picked = await fan_out(
        stores, 300, lambda store, index: store.attach_from_pool(program_id, pks[index], False, NOW, actor=ACTOR)
    )

    handed = {pk: code for pk, code in zip(pks, picked, strict=True) if code is not None}
    assert len(handed) == 200
    assert picked.count(None) == 100
    assert sorted(handed.values()) == codes  # 200 distinct codes: every free code, each once
    state = await bindings(stores[0], program_id)
    assert state == {code: (1, pk) for pk, code in handed.items()}  # one binding each, to the profile told
    assert await stores[0].program_stats(program_id, NOW) == ProgramStats(
        total=200, free=0, attached=200, activated=0, expired=0
    )
    assert all([item.attached is not None async for item in stores[0].export_codes(program_id)])
    # The profiles told "no code" hold none: each can be deleted without force; the others cannot.
    for pk in pks:
        assert await stores[0].delete_profile(pk, False, NOW, actor=ACTOR) is (pk not in handed)


async def test_concurrent_pool_attaches_with_more_codes_than_callers(stores: list[Store]) -> None:
    """With codes to spare, every caller gets one, and they are the oldest ones (FIFO holds under load)."""
    codes = [f"POOL-{index:03d}" for index in range(80)]
    program_id, db_id = await setup(stores[0], codes)
    pks = await make_profiles(stores, db_id, 50)

    picked = await fan_out(
        stores, 50, lambda store, index: store.attach_from_pool(program_id, pks[index], False, NOW, actor=ACTOR)
    )

    assert None not in picked
    assert sorted(code for code in picked if code is not None) == codes[:50]
    stats = await stores[0].program_stats(program_id, NOW)
    assert (stats.free, stats.attached) == (30, 50)


async def test_concurrent_attach_of_one_personal_code(stores: list[Store]) -> None:
    program_id, db_id = await setup(stores[0], ["MINE"])
    pks = await make_profiles(stores, db_id, 50)

    outcomes = await fan_out(
        stores,
        50,
        lambda store, index: store.attach_code(program_id, "MINE", "MINE", pks[index], False, False, NOW, actor=ACTOR),
    )

    assert Counter(outcomes) == {Outcome.DONE: 1, Outcome.ATTACHED_ELSEWHERE: 49}
    winner = pks[outcomes.index(Outcome.DONE)]
    state = await stores[0].code_state(program_id, "MINE")
    assert state is not None
    assert state.attached_count == 1
    assert state.latest is not None
    assert state.latest.profile_pk == winner
    for pk in pks:  # the losers hold nothing to detach; the winner does
        if pk != winner:
            assert await stores[0].detach(program_id, "MINE", pk, NOW, actor=ACTOR) is Outcome.ATTACHED_ELSEWHERE
    assert await stores[0].detach(program_id, "MINE", winner, NOW, actor=ACTOR) is Outcome.DONE


async def test_concurrent_attach_creating_one_new_code(stores: list[Store]) -> None:
    """Attach with create of an unknown code by many profiles: one code is created, and bound once."""
    program_id, db_id = await setup(stores[0])
    pks = await make_profiles(stores, db_id, 50)

    outcomes = await fan_out(
        stores,
        50,
        lambda store, index: store.attach_code(program_id, "NEW", "NEW", pks[index], False, True, NOW, actor=ACTOR),
    )

    assert Counter(outcomes) == {Outcome.DONE: 1, Outcome.ATTACHED_ELSEWHERE: 49}
    assert await stores[0].program_stats(program_id, NOW) == ProgramStats(
        total=1, free=0, attached=1, activated=0, expired=0
    )


async def test_concurrent_attach_of_one_universal_code_by_the_same_profile(stores: list[Store]) -> None:
    program_id, db_id = await setup(stores[0], ["UNI"], multiple_usage=True)
    (pk,) = await make_profiles(stores, db_id, 1)

    outcomes = await fan_out(
        stores, 40, lambda store, _: store.attach_code(program_id, "UNI", "UNI", pk, True, False, NOW, actor=ACTOR)
    )

    assert Counter(outcomes) == {Outcome.DONE: 1, Outcome.UNCHANGED: 39}
    state = await stores[0].code_state(program_id, "UNI", pk)
    assert state is not None
    assert state.attached_count == 1
    assert state.own is not None


async def test_concurrent_attach_of_one_universal_code_by_many_profiles(stores: list[Store]) -> None:
    program_id, db_id = await setup(stores[0], ["UNI"], multiple_usage=True)
    pks = await make_profiles(stores, db_id, 40)

    # Each profile twice, all at once: one binding per profile, and the count agrees with the bindings.
    outcomes = await fan_out(
        stores,
        80,
        lambda store, index: store.attach_code(
            program_id, "UNI", "UNI", pks[index % 40], True, False, NOW, actor=ACTOR
        ),
    )

    assert Counter(outcomes) == {Outcome.DONE: 40, Outcome.UNCHANGED: 40}
    state = await stores[0].code_state(program_id, "UNI")
    assert state is not None
    assert state.attached_count == 40
    for pk in pks:
        own = await stores[0].code_state(program_id, "UNI", pk)
        assert own is not None
        assert own.own is not None


async def test_concurrent_imports_respect_the_codes_limit(stores: list[Store]) -> None:
    program_id, _ = await setup(stores[0], codes_limit=50)

    # 20 batches of 10; neighbouring batches overlap by 5 codes, so duplicates race as well.
    def batch(index: int) -> list[tuple[str, str]]:
        return [(f"C{number:03d}", f"C{number:03d}") for number in range(index * 5, index * 5 + 10)]

    outcomes = await fan_out(
        stores, 20, lambda store, index: store.import_codes(program_id, batch(index), NOW, actor=ACTOR)
    )

    inserted = [key for outcome in outcomes for key in outcome.inserted]
    assert len(inserted) == 50
    assert len(set(inserted)) == 50  # no key reported inserted twice
    stats = await stores[0].program_stats(program_id, NOW)
    assert stats.total == 50
    listed = [item.code async for item in stores[0].export_codes(program_id)]
    assert sorted(listed) == sorted(inserted)
    for outcome in outcomes:
        assert 0 <= outcome.considered <= 10
    more = await stores[0].import_codes(program_id, [("LATE", "LATE")], NOW, actor=ACTOR)
    assert (more.inserted, more.considered) == (frozenset(), 0)


async def test_concurrent_imports_of_overlapping_batches_insert_each_code_once(stores: list[Store]) -> None:
    """24 imports at once of 40 codes each, every batch sharing half its codes with the next and in its own order:
    some meet held codes midway (the fast insert is undone and retried skipping them), some never do. Every code
    is reported inserted by exactly one import, and each stored code names that import's event."""
    program_id, _ = await setup(stores[0])

    def batch(index: int) -> list[tuple[str, str]]:
        numbers = list(range(index * 20, index * 20 + 40))
        ordered = numbers[::-1] if index % 2 else numbers
        return [(f"C{number:04d}", f"C{number:04d}") for number in ordered]

    outcomes = await fan_out(
        stores, 24, lambda store, index: store.import_codes(program_id, batch(index), NOW, actor=ACTOR)
    )

    inserted = [key for outcome in outcomes for key in outcome.inserted]
    assert sorted(inserted) == [f"C{number:04d}" for number in range(24 * 20 + 20)]
    assert all(outcome.considered == 40 for outcome in outcomes)
    created_by: dict[str, int] = {}
    for index, outcome in enumerate(outcomes):
        for key in outcome.inserted:
            history = await stores[0].code_history(program_id, key, 0, 10)
            assert history is not None and history[0].event is CodeEventKind.CREATED
            created_by[key] = history[0].id
        assert len({created_by[key] for key in outcome.inserted}) <= 1, index  # one event per import
    assert (await stores[0].program_stats(program_id, NOW)).total == len(inserted)


async def test_concurrent_imports_and_creating_attaches_respect_the_codes_limit(stores: list[Store]) -> None:
    program_id, db_id = await setup(stores[0], codes_limit=30)
    pks = await make_profiles(stores, db_id, 30)

    async def work(store: Store, index: int) -> Any:
        if index % 2:
            return await store.import_codes(
                program_id, [(f"I{index:02d}-{n}", f"I{index:02d}-{n}") for n in range(3)], NOW, actor=ACTOR
            )
        return await store.attach_code(
            program_id, f"A{index:02d}", f"A{index:02d}", pks[index], False, True, NOW, actor=ACTOR
        )

    results = await fan_out(stores, 30, work)

    created = sum(len(r.inserted) for r in results if not isinstance(r, Outcome))
    created += sum(1 for r in results if r is Outcome.DONE)
    assert created == 30
    assert set(r for r in results if isinstance(r, Outcome)) <= {Outcome.DONE, Outcome.LIMIT_REACHED}
    stats = await stores[0].program_stats(program_id, NOW)
    assert stats.total == 30
    assert stats.attached == sum(1 for r in results if r is Outcome.DONE)


async def test_concurrent_generations_and_imports_never_make_a_code_twice(stores: list[Store]) -> None:
    """28 requests at once into one program: 20 generate 100 codes each from `####` (10,000 possible codes, 200 of
    them held, so draws collide with held codes and across requests), 8 import 25 codes of the same shape. Every
    code exists once, every generation made exactly its count, and what each request reports made is what the
    program holds."""
    held = [f"{number:04d}" for number in range(0, 10_000, 50)]
    program_id, _ = await setup(stores[0], held)
    pattern = Template("####").key_pattern(case_sensitive=True)

    async def work(store: Store, index: int) -> list[str]:
        if index >= 20:
            rows = [(f"{number:04d}", f"{number:04d}") for number in range(index * 7, index * 7 + 25)]
            return sorted((await store.import_codes(program_id, rows, NOW, actor=ACTOR)).inserted)
        made = await store.generate_codes(
            program_id, range(100), drawing("####"), pattern, 10**6, NOW, True, True, actor=ACTOR
        )
        assert made.outcome is Outcome.DONE
        return made.codes

    results = await fan_out(stores, 28, work)

    assert all(len(result) == 100 for result in results[:20])
    created = [code for result in results for code in result]
    assert len(created) == len(set(created))
    listed = [item.code async for item in stores[0].export_codes(program_id)]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted([*held, *created])
    assert (await stores[0].program_stats(program_id, NOW)).total == len(held) + len(created)


@pytest.mark.parametrize("bound", ["codes_limit", "key space"])
async def test_concurrent_generations_cannot_pass_a_bound_together(stores: list[Store], bound: str) -> None:
    """20 generations of 50 codes at once, with room for 500: exactly 10 run, the others are refused whole."""
    program_id, _ = await setup(stores[0], codes_limit=500 if bound == "codes_limit" else None)
    pattern = Template("SALE-########").key_pattern(case_sensitive=True)
    most_matching = 500 if bound == "key space" else 10**6

    async def generate(store: Store, _: int) -> Any:
        draw = drawing("SALE-########")
        return await store.generate_codes(
            program_id, range(50), draw, pattern, most_matching, NOW, True, True, actor=ACTOR
        )

    results = await fan_out(stores, 20, generate)

    refusal = Outcome.LIMIT_REACHED if bound == "codes_limit" else Outcome.KEY_SPACE_FULL
    assert Counter(result.outcome for result in results) == {Outcome.DONE: 10, refusal: 10}
    assert all(result.wanted == 550 and result.allowed == 500 for result in results if result.outcome is refusal)
    made = [code for result in results for code in result.codes]
    assert len(set(made)) == 500
    assert sorted([item.code async for item in stores[0].export_codes(program_id)]) == sorted(made)


async def test_concurrent_one_per_profile_attaches_for_one_profile(stores: list[Store]) -> None:
    codes = [f"P{index:02d}" for index in range(10)]
    program_id, db_id = await setup(stores[0], codes, one_code_per_profile=True)
    (pk,) = await make_profiles(stores, db_id, 1)

    picked = await fan_out(stores, 30, lambda store, _: store.attach_from_pool(program_id, pk, True, NOW, actor=ACTOR))

    assert set(picked) == {"P00"}
    stats = await stores[0].program_stats(program_id, NOW)
    assert (stats.attached, stats.free) == (1, 9)


async def test_concurrent_one_per_profile_attaches_for_several_profiles(stores: list[Store]) -> None:
    codes = [f"P{index:02d}" for index in range(20)]
    program_id, db_id = await setup(stores[0], codes, one_code_per_profile=True)
    pks = await make_profiles(stores, db_id, 8)

    # Five attaches per profile, interleaved: each profile ends up with exactly one code, always the same.
    picked = await fan_out(
        stores, 40, lambda store, index: store.attach_from_pool(program_id, pks[index % 8], True, NOW, actor=ACTOR)
    )

    per_profile: dict[int, set[str | None]] = {}
    for index, code in enumerate(picked):
        per_profile.setdefault(pks[index % 8], set()).add(code)
    assert all(len(got) == 1 and None not in got for got in per_profile.values())
    assert len({next(iter(got)) for got in per_profile.values()}) == 8
    stats = await stores[0].program_stats(program_id, NOW)
    assert (stats.attached, stats.free) == (8, 12)


async def test_concurrent_detach_and_activate_leave_a_consistent_state(stores: list[Store]) -> None:
    codes = [f"D{index:02d}" for index in range(30)]
    program_id, db_id = await setup(stores[0], codes)
    pks = await make_profiles(stores, db_id, 30)
    for code, pk in zip(codes, pks, strict=True):
        assert await stores[0].attach_code(program_id, code, code, pk, False, False, NOW, actor=ACTOR) is Outcome.DONE

    # Half the pairs are launched side by side; for the other half every detach is launched first and every
    # activation last, so that both orders of the race get played (the assertions hold for either).
    order = [(kind, number) for number in range(15) for kind in ("detach", "activate")]
    order = [("detach", n) for n in range(15, 30)] + order + [("activate", n) for n in range(15, 30)]

    async def race(store: Store, index: int) -> Outcome:
        kind, number = order[index]
        if kind == "activate":
            return await store.activate(program_id, codes[number], None, NOW, actor=ACTOR)
        return await store.detach(program_id, codes[number], pks[number], NOW, actor=ACTOR)

    results = dict(zip(order, await fan_out(stores, 60, race), strict=True))
    outcomes = [results[kind, number] for number in range(30) for kind in ("detach", "activate")]

    for number, code in enumerate(codes):
        detached, activated = outcomes[2 * number], outcomes[2 * number + 1]
        state = await stores[0].code_state(program_id, code, pks[number])
        assert state is not None
        if detached is Outcome.DONE:
            # The detach won: the activation found nothing bound, and the code is free and unused.
            assert activated is Outcome.NOT_ATTACHED, code
            assert (state.attached_count, state.activated_count, state.latest) == (0, 0, None), code
        else:
            # The activation won: the detach was refused, the code stays bound, once, and activated.
            assert (detached, activated) == (Outcome.ALREADY_ACTIVATED, Outcome.DONE), code
            assert (state.attached_count, state.activated_count) == (1, 1), code
            assert state.own is not None, code
    stats = await stores[0].program_stats(program_id, NOW)
    won_by_detach = sum(1 for outcome in outcomes[0::2] if outcome is Outcome.DONE)
    assert (stats.free, stats.attached, stats.activated) == (won_by_detach, 30 - won_by_detach, 30 - won_by_detach)


# --- deletes racing attaches (PostgreSQL: SQLite's write transactions are serial, so there is no race to stage) ---
#
# A second connection holds one row lock that the attach needs only AFTER it has claimed its code, so the attach is
# caught half-way; then the delete starts; then the lock is released. Whatever the store's locking, the outcome
# must be one the two operations could produce one after the other: never "attached" AND "deleted without force".

POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


async def lock_waiters(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return count


async def until_waiting(conn: asyncpg.Connection, count: int) -> None:
    """Poll until ``count`` sessions wait on a lock (a synchronisation point, not a timing assertion)."""
    for _ in range(2000):
        if await lock_waiters(conn) >= count:
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"expected {count} sessions waiting on a lock, saw {await lock_waiters(conn)}")


@POSTGRES_ONLY
async def test_delete_program_without_force_waits_for_an_attach_in_flight(
    stores: list[Store], database_url: str
) -> None:
    store = stores[0]
    program_id, db_id = await setup(store, ["A", "B"])
    account_id = await store.ensure_account("acme", NOW)
    (pk,) = await make_profiles(stores, db_id, 1)
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            # The attach claims "A", then its binding's foreign key check waits for this profile lock.
            await blocker.execute("SELECT id FROM profiles WHERE id = $1 FOR UPDATE", pk)
            attach = asyncio.create_task(store.attach_code(program_id, "A", "A", pk, False, False, NOW, actor=ACTOR))
            await until_waiting(blocker, 1)
            delete = asyncio.create_task(store.delete_program(account_id, program_id, False))
            await until_waiting(blocker, 2)
        attached, deleted = await attach, await delete
    finally:
        await blocker.close()

    assert attached is Outcome.DONE
    assert deleted is False  # the attach landed first, so the delete without force is refused
    assert await store.get_program(account_id, program_id) is not None
    state = await store.code_state(program_id, "A", pk)
    assert state is not None
    assert state.own is not None


@POSTGRES_ONLY
async def test_delete_profile_without_force_waits_for_an_attach_in_flight(
    stores: list[Store], database_url: str
) -> None:
    store = stores[0]
    program_id, db_id = await setup(store, ["UNI"], multiple_usage=True)
    (pk,) = await make_profiles(stores, db_id, 1)
    code = await store.code_state(program_id, "UNI")
    assert code is not None
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            # The universal attach inserts its binding, then waits for this lock to count it on the code row.
            await blocker.execute("SELECT id FROM codes WHERE id = $1 FOR NO KEY UPDATE", code.id)
            attach = asyncio.create_task(store.attach_code(program_id, "UNI", "UNI", pk, True, False, NOW, actor=ACTOR))
            await until_waiting(blocker, 1)
            delete = asyncio.create_task(store.delete_profile(pk, False, NOW, actor=ACTOR))
            await until_waiting(blocker, 2)
        attached, deleted = await attach, await delete
    finally:
        await blocker.close()

    assert attached is Outcome.DONE
    assert deleted is False  # refused cleanly: the profile now holds a code
    state = await store.code_state(program_id, "UNI", pk)
    assert state is not None
    assert state.attached_count == 1
    assert state.own is not None


async def test_concurrent_detach_and_pool_attach(stores: list[Store]) -> None:
    """Codes returned by detach while others draw from the pool: nobody gets a code that is still bound."""
    codes = [f"R{index:02d}" for index in range(20)]
    program_id, db_id = await setup(stores[0], codes)
    holders = await make_profiles(stores, db_id, 20)
    for code, pk in zip(codes, holders, strict=True):
        assert await stores[0].attach_code(program_id, code, code, pk, False, False, NOW, actor=ACTOR) is Outcome.DONE
    takers = await make_profiles(stores, db_id, 30)

    async def work(store: Store, index: int) -> Any:
        if index < 20:
            return await store.detach(program_id, codes[index], holders[index], NOW, actor=ACTOR)
        return await store.attach_from_pool(program_id, takers[index - 20], False, NOW, actor=ACTOR)

    results = await fan_out(stores, 50, work)

    assert results[:20] == [Outcome.DONE] * 20
    taken = {takers[index]: code for index, code in enumerate(results[20:]) if code is not None}
    assert len(set(taken.values())) == len(taken)
    state = await bindings(stores[0], program_id)
    assert {code: holder for code, (_, holder) in state.items() if holder is not None} == {
        code: pk for pk, code in taken.items()
    }
    assert all(count == (1 if holder is not None else 0) for count, holder in state.values())


# --- profiles/import and programs/update: the rules judged inside the writing transaction ----------------------------


def principal_of(account_id: int) -> Principal:
    return Principal(account_id=account_id, role=Role.ADMIN)


# The selectors the eight imports use, dealt round-robin: one key, written in different ways.
IMPORT_KEYS: dict[str, list[dict[str, Any]]] = {
    "email": [{"email": "New.Comer@Example.org"}, {"email": " new.comer@example.org"}],
    # The two email modes read the same field, so they must take the same lock.
    "email-and-email_profile": [
        {"email": "new.comer@example.org"},
        {"matching": "email_profile", "email": "NEW.COMER@example.org"},
    ],
    "phone": [{"matching": "phone", "phone": "+7 (900) 000-00-01"}, {"matching": "phone", "phone": "79000000001"}],
    "custom": [{"matching": "custom", "field_name": "crm_id", "field_value": "C-1"}],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", IMPORT_KEYS)
async def test_concurrent_imports_of_one_new_profile_create_one(stores: list[Store], key: str) -> None:
    """Eight imports of one new key at once, each through its own service and connection: one profile, and every
    import answers with it (the later ones update it)."""
    account_id = await stores[0].ensure_account("acme", NOW)
    _, db_id = await setup(stores[0])
    services = [ProfileService(store) for store in stores]

    selectors = IMPORT_KEYS[key]

    async def one(_: Store, index: int) -> str:
        request = ProfileImport(db_id=db_id, data={f"seen_{index}": index}, **selectors[index % len(selectors)])
        created = await services[index % len(services)].import_profile(principal_of(account_id), request)
        return created.profile_id

    answers = await fan_out(stores, 8, one)

    found = await stores[0].find_profiles(db_id, match_from(ProfileImport(db_id=db_id, **selectors[0])), limit=10)
    assert len(found) == 1, found
    assert set(answers) == {found[0].profile_id}
    assert found[0].fields.keys() >= {f"seen_{index}" for index in range(8)}  # every import updated the one profile


@pytest.mark.timeout(120)
async def test_concurrent_program_updates_cannot_break_a_rule_together(stores: list[Store]) -> None:
    """On each of 12 programs, one update turns ``generate_on_attach`` on (fine: there is a template) while another
    clears the template (fine: generation is off). Each is valid alone; together they are not. Whatever the order,
    no program may end up generating without a template."""
    account_id = await stores[0].ensure_account("acme", NOW)
    programs = [
        await stores[0].create_program(account_id, {"name": f"P{index}", "template": "A-####"}, NOW)
        for index in range(12)
    ]
    services = [ProgramService(store) for store in stores]

    async def race(_: Store, index: int) -> str:
        program_id = programs[index // 2].id
        change: dict[str, Any] = {"generate_on_attach": True} if index % 2 == 0 else {"template": None}
        try:
            await services[index % len(services)].update(
                principal_of(account_id), ProgramUpdate(loyalty_id=program_id, **change)
            )
        except BadRequest:
            return "refused"
        return "done"

    outcomes = await fan_out(stores, 24, race)

    for number, created in enumerate(programs):
        final = await stores[0].get_program(account_id, created.id)
        assert final is not None
        assert not (final.generate_on_attach and final.template is None), final
        assert sorted(outcomes[2 * number : 2 * number + 2]) == ["done", "refused"], created.id


@POSTGRES_ONLY
async def test_program_update_judges_the_row_it_writes(stores: list[Store], database_url: str) -> None:
    """Staged: both updates are held back before they write. Judged on a read taken before the lock, both would pass
    and together break the rule; judged on the locked row, the second sees the first's change and is refused."""
    store = stores[0]
    account_id = await store.ensure_account("acme", NOW)
    created = await store.create_program(account_id, {"name": "P", "template": "A-####"}, NOW)
    service = ProgramService(store)
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT id FROM programs WHERE id = $1 FOR UPDATE", created.id)
            switch_on = asyncio.create_task(
                service.update(principal_of(account_id), ProgramUpdate(loyalty_id=created.id, generate_on_attach=True))
            )
            await until_waiting(blocker, 1)
            clear = asyncio.create_task(
                service.update(principal_of(account_id), ProgramUpdate(loyalty_id=created.id, template=None))
            )
            await until_waiting(blocker, 2)
        results = await asyncio.gather(switch_on, clear, return_exceptions=True)
    finally:
        await blocker.close()

    assert sum(isinstance(result, BadRequest) for result in results) == 1, results
    final = await store.get_program(account_id, created.id)
    assert final is not None
    assert not (final.generate_on_attach and final.template is None), final


@POSTGRES_ONLY
async def test_case_sensitive_change_waits_for_an_import_in_flight(stores: list[Store], database_url: str) -> None:
    """Staged: an import holds the program row and is caught half-way (its insert waits on a code another
    connection is inserting); the ``case_sensitive`` change must wait for it, then see its code and be refused."""
    store = stores[0]
    account_id = await store.ensure_account("acme", NOW)
    created = await store.create_program(account_id, {"name": "P"}, NOW)
    service = ProgramService(store)
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute(
                "INSERT INTO codes (program_id, code, code_key, created) VALUES ($1, 'X', 'X', 0)", created.id
            )
            imported = asyncio.create_task(store.import_codes(created.id, [("X", "X"), ("Y", "Y")], NOW, actor=ACTOR))
            await until_waiting(blocker, 1)
            change = asyncio.create_task(
                service.update(principal_of(account_id), ProgramUpdate(loyalty_id=created.id, case_sensitive=False))
            )
            await until_waiting(blocker, 2)
            raise _Release  # the blocker's insert is rolled back: the import goes on and inserts both codes
    except _Release:
        pass
    finally:
        await blocker.close()
    outcome, refused = await asyncio.gather(imported, change, return_exceptions=True)

    assert not isinstance(outcome, BaseException) and outcome.inserted == {"X", "Y"}
    assert isinstance(refused, Conflict), refused
    final = await store.get_program(account_id, created.id)
    assert final is not None and final.case_sensitive is True


class _Release(Exception):
    """Raised to roll the blocker's transaction back, releasing what it held."""


async def test_concurrent_requests_with_one_idempotency_key_execute_once(stores: list[Store]) -> None:
    """50 attaches from the pool under one key at once: the key's lock makes them run one after the other, the
    first binds a code and keeps its answer, the others find it and replay it — without executing (the answer is
    rendered once, which counts executions that reached the end of their work)."""
    program_id, db_id = await setup(stores[0], [f"P{index:02d}" for index in range(60)])
    (holder,) = await make_profiles(stores, db_id, 1)
    account_id = await stores[0].find_account("acme")
    assert account_id is not None
    rendered: list[str | None] = []

    def render(picked: str | None) -> Answer:
        rendered.append(picked)
        return Answer(0, "Successful operation", f'{{"data":{{"code":"{picked}"}}}}')

    async def attach(store: Store, index: int) -> Answer:
        claim = Claim(account_id, "one-key", "one request", NOW_US, NOW_US - 24 * MICROS_PER_HOUR)
        token = CLAIM.set(claim)
        claim.render = render
        try:
            return render(await store.attach_from_pool(program_id, holder, False, NOW, actor=ACTOR))
        except Replay as replay:
            return replay.answer
        finally:
            CLAIM.reset(token)

    answers = await fan_out(stores, 50, attach)

    assert rendered == ["P00", "P00"]  # once in the transaction, once by the one request that executed
    assert set(answers) == {render("P00")}
    bound = {code: state for code, state in (await bindings(stores[0], program_id)).items() if state[0]}
    assert bound == {"P00": (1, holder)}


# --- the history (docs/api.md#history): one event per change that happened, written in its transaction -------------


async def history(store: Store, program_id: int, code: str) -> list[CodeEvent]:
    found = await store.code_history(program_id, code, 0, 1000)
    assert found is not None
    return found


async def test_concurrent_activations_of_one_code_record_one_event(stores: list[Store]) -> None:
    program_id, db_id = await setup(stores[0], ["ONE"])
    (holder,) = await make_profiles(stores, db_id, 1)
    assert await stores[0].attach_code(program_id, "ONE", "ONE", holder, False, False, NOW, actor=ACTOR) is Outcome.DONE

    outcomes = await fan_out(stores, 50, lambda store, _: store.activate(program_id, "ONE", None, NOW, actor=ACTOR))

    assert Counter(outcomes) == {Outcome.DONE: 1, Outcome.ALREADY_ACTIVATED: 49}
    kinds = [event.event for event in await history(stores[0], program_id, "ONE")]
    assert kinds == [CodeEventKind.CREATED, CodeEventKind.ATTACHED, CodeEventKind.ACTIVATED]


async def test_concurrent_expiry_changes_each_record_the_value_they_replaced(stores: list[Store]) -> None:
    """30 updates of one code's expiry at once, to distinct dates: the code row lock makes them one after the
    other, so the events form one chain — each ``old`` is the previous ``new`` — ending at the expiry the code has."""
    program_id, _ = await setup(stores[0], ["EXP"])
    dates = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=index) for index in range(30)]

    outcomes = await fan_out(
        stores,
        30,
        lambda store, index: store.update_code(program_id, "EXP", None, dates[index], True, None, NOW, actor=ACTOR),
    )

    assert set(outcomes) == {Outcome.DONE}
    changes = [event.details for event in await history(stores[0], program_id, "EXP")][1:]
    assert len(changes) == 30
    assert changes[0]["old"] is None
    assert all(later["old"] == earlier["new"] for earlier, later in itertools.pairwise(changes))
    assert sorted(change["new"] for change in changes) == [format_rfc3339(date) for date in dates]
    state = await stores[0].code_state(program_id, "EXP")
    assert state is not None and format_rfc3339(state.expire_date) == changes[-1]["new"]


async def test_concurrent_pool_attaches_record_one_event_per_code_handed_out(stores: list[Store]) -> None:
    codes = [f"POOL-{index:02d}" for index in range(30)]
    program_id, db_id = await setup(stores[0], codes)
    pks = await make_profiles(stores, db_id, 40)

    picked = await fan_out(
        stores, 40, lambda store, index: store.attach_from_pool(program_id, pks[index], False, NOW, actor=ACTOR)
    )

    assert picked.count(None) == 10
    for pk, code in zip(pks, picked, strict=True):
        if code is None:
            continue
        state = await stores[0].code_state(program_id, code)
        assert state is not None and state.latest is not None and state.latest.profile_pk == pk
        attached = [e for e in await history(stores[0], program_id, code) if e.event is CodeEventKind.ATTACHED]
        assert [event.profile_id for event in attached] == [state.latest.profile_id], code


# Staged (PostgreSQL): a forced programs/delete arrives while a change of one of its codes is held back by a row
# lock that the change queued for first. The change holds the program row (``share_row``) from its first statement,
# so the delete waits for it; were the program taken only by the event's foreign key, after the code or binding,
# the two would wait for each other and PostgreSQL would abort one as a deadlock (a 503).
CHANGES_RACING_A_DELETE = {
    "activate": ("SELECT id FROM code_bindings WHERE code_id = $1 FOR UPDATE", "activate"),
    "update expiry": ("SELECT id FROM codes WHERE id = $1 FOR NO KEY UPDATE", "expiry"),
    "detach": ("SELECT id FROM codes WHERE id = $1 FOR NO KEY UPDATE", "detach"),
}


@POSTGRES_ONLY
@pytest.mark.parametrize("change", CHANGES_RACING_A_DELETE)
async def test_a_change_of_a_code_and_a_forced_program_delete_do_not_deadlock(
    stores: list[Store], database_url: str, change: str
) -> None:
    store = stores[0]
    program_id, db_id = await setup(store, ["A"])
    account_id = await store.ensure_account("acme", NOW)
    (pk,) = await make_profiles(stores, db_id, 1)
    assert await store.attach_code(program_id, "A", "A", pk, False, False, NOW, actor=ACTOR) is Outcome.DONE
    code = await store.code_state(program_id, "A")
    assert code is not None
    hold, kind = CHANGES_RACING_A_DELETE[change]
    operations = {
        "activate": lambda: store.activate(program_id, "A", None, NOW, actor=ACTOR),
        "expiry": lambda: store.update_code(
            program_id, "A", None, NOW + timedelta(days=1), True, None, NOW, actor=ACTOR
        ),
        "detach": lambda: store.detach(program_id, "A", pk, NOW, actor=ACTOR),
    }
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute(hold, code.id)
            changing = asyncio.create_task(operations[kind]())
            await until_waiting(blocker, 1)
            delete = asyncio.create_task(store.delete_program(account_id, program_id, True))
            await until_waiting(blocker, 2)
        changed, deleted = await asyncio.gather(changing, delete, return_exceptions=True)
    finally:
        await blocker.close()

    assert (changed, deleted) == (Outcome.DONE, True)  # one after the other: neither aborted
    assert await store.code_history(program_id, "A", 0, 10) is None  # the code went with its program


@POSTGRES_ONLY
async def test_a_forced_profile_delete_waiting_for_a_detach_releases_the_code_once(
    stores: list[Store], database_url: str
) -> None:
    """A detach of one of the profile's codes is caught between its claim (``attached_count`` 1 → 0) and its
    commit; the forced delete starts and waits; the detach commits. The delete must not release that code a second
    time (``attached_count`` -1 broke its CHECK) nor record a second ``detached`` for it."""
    store = stores[0]
    program_id, db_id = await setup(store, ["KEEP", "GONE"])
    (pk,) = await make_profiles(stores, db_id, 1)
    for code in ("KEEP", "GONE"):
        assert await store.attach_code(program_id, code, code, pk, False, False, NOW, actor=ACTOR) is Outcome.DONE
    detacher = await asyncpg.connect(database_url)
    try:
        async with detacher.transaction():
            # What `detach` does, held open: the claim on the code, then the binding removed.
            code_id = await detacher.fetchval(
                "UPDATE codes SET attached_count = 0 WHERE program_id = $1 AND code_key = 'GONE' RETURNING id",
                program_id,
            )
            await detacher.execute("DELETE FROM code_bindings WHERE code_id = $1", code_id)
            await detacher.execute(  # and its counter (store.events.bump), on a shard of its own
                "INSERT INTO program_days (program_id, day, shard, detached) VALUES ($1, $2, 99, 1)",
                program_id,
                NOW_US // MICROS_PER_DAY,
            )
            delete = asyncio.create_task(store.delete_profile(pk, True, NOW, actor=ACTOR))
            await until_waiting(detacher, 1)
        assert await delete is True
    finally:
        await detacher.close()
    stats = await store.program_stats(program_id, NOW)
    assert (stats.free, stats.attached) == (2, 0)
    gone = await store.code_history(program_id, "GONE", 0, 100)
    assert gone is not None and [event.event for event in gone].count(CodeEventKind.DETACHED) == 0
    kept = await store.code_history(program_id, "KEEP", 0, 100)
    assert kept is not None and [event.event for event in kept].count(CodeEventKind.DETACHED) == 1


async def test_concurrent_changes_leave_the_program_counters_exact(stores: list[Store], database_url: str) -> None:
    """The counters of docs/api.md#program-statistics under races, against the full-scan definition: a universal
    code bound and activated by many profiles at once (its first activation counts, the others not), pool
    attaches, activations and rollbacks of personal codes, and detaches — all in parallel on distinct connections
    (on PostgreSQL each writes its own counter shard)."""
    from tests.store.test_program_counters import oracle

    shared, db_id = await setup(stores[0], ["UNI"], multiple_usage=True)
    account_id = await stores[0].ensure_account("acme", NOW)
    personal = (await stores[0].create_program(account_id, {"name": "Pool"}, NOW)).id
    codes = [f"P{index:02d}" for index in range(40)]
    await stores[0].import_codes(personal, [(code, code) for code in codes], NOW, actor=ACTOR)
    pks = await make_profiles(stores, db_id, 40)

    async def bind(store: Store, index: int) -> object:
        if index % 2:
            return await store.attach_code(shared, "UNI", "UNI", pks[index // 2], True, False, NOW, actor=ACTOR)
        return await store.attach_from_pool(personal, pks[index // 2], False, NOW, actor=ACTOR)

    await fan_out(stores, 80, bind)
    held = await bindings(stores[0], personal)

    async def use(store: Store, index: int) -> object:
        pk = pks[index % 40]
        if index < 40:
            return await store.activate(shared, "UNI", pk, NOW, actor=ACTOR)
        code = next(code for code, (_, owner) in held.items() if owner == pk)
        if index < 60:
            return await store.activate(personal, code, pk, NOW, actor=ACTOR)
        return await store.detach(personal, code, pk, NOW, actor=ACTOR)

    outcomes = await fan_out(stores, 80, use)
    assert Counter(outcomes) == {Outcome.DONE: 80}

    async def undo(store: Store, index: int) -> object:
        return await store.update_code(shared, "UNI", pks[index], None, False, False, NOW, actor=ACTOR)

    await fan_out(stores, 39, undo)  # every activation of the universal code but one rolled back
    for program_id in (shared, personal):
        assert await stores[0].program_stats(program_id, NOW) == await oracle(database_url, program_id, NOW)
    assert (await stores[0].program_stats(shared, NOW)).activated == 1
    assert (await stores[0].program_stats(personal, NOW)).attached == 20
