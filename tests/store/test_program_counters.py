"""Program statistics from counters (docs/api.md#program-statistics), on both adapters: after any sequence of
changes, the counter-based statistics equal the definition read off every code (the full scan below is the
oracle, kept here only), and the per-day history adds up to them.

The sequences are random but seeded (one test per seed), so a failure replays exactly.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from promocodes.domain.templates import Template
from promocodes.domain.times import to_micros
from promocodes.models import Outcome, ProgramStats
from promocodes.store import Store
from promocodes.store.migrations import migration_files
from promocodes.store.postgres import PostgresStore
from tests.helpers import ACTOR, drawing, save_profile, sql_rows

pytestmark = pytest.mark.anyio

START = datetime(2025, 6, 1, 9, 0, 0, tzinfo=UTC)
STEPS = 140


async def oracle(database_url: str, program_id: int, now: datetime) -> ProgramStats:
    """The statistics by their definition, read off every code and binding of the program."""
    at = to_micros(now)
    [row] = await sql_rows(
        database_url,
        """
        SELECT count(*) AS total,
               COALESCE(sum(CASE WHEN attached_count = 0 AND (expire_date IS NULL OR expire_date > $2)
                                 THEN 1 ELSE 0 END), 0) AS free,
               COALESCE(sum(CASE WHEN attached_count > 0 THEN 1 ELSE 0 END), 0) AS attached,
               COALESCE(sum(CASE WHEN EXISTS (SELECT 1 FROM code_bindings b
                                              WHERE b.code_id = codes.id AND b.activated IS NOT NULL)
                                 THEN 1 ELSE 0 END), 0) AS activated,
               COALESCE(sum(CASE WHEN expire_date IS NOT NULL AND expire_date <= $2 THEN 1 ELSE 0 END), 0)
                   AS expired
        FROM codes WHERE program_id = $1
        """,
        program_id,
        at,
    )
    return ProgramStats(**{name: int(value) for name, value in row.items()})


class Run:
    """One random sequence of changes to two programs (one personal, one multiple-usage) of one account."""

    def __init__(self, store: Store, database_url: str, rng: random.Random) -> None:
        self.store = store
        self.database_url = database_url
        self.rng = rng
        self.now = START
        self.codes: dict[int, list[str]] = {}
        self.profiles: list[int] = []
        self.db_id = 0
        self.serial = 0
        self.activated = 0

    def fresh(self) -> str:
        self.serial += 1
        return f"C{self.serial:05d}"

    async def setup(self) -> tuple[int, int]:
        account_id = await self.store.ensure_account("acme", START)
        personal = await self.store.create_program(account_id, {"name": "personal", "template": "P-####"}, START)
        shared = await self.store.create_program(account_id, {"name": "shared", "multiple_usage": True}, START)
        self.codes = {personal.id: [], shared.id: []}
        self.db_id = (await self.store.create_database(account_id, "main", START)).id
        for _ in range(6):
            await self.new_profile()
        return personal.id, shared.id

    async def new_profile(self) -> None:
        self.serial += 1
        saved = await save_profile(self.store, self.db_id, f"p{self.serial}", None, [], {}, self.now)
        self.profiles.append(saved.pk)

    def code(self, program_id: int) -> str:
        held = self.codes[program_id]
        return self.rng.choice(held) if held and self.rng.random() < 0.9 else self.fresh()

    async def step(self, personal: int, shared: int) -> str:
        rng, store = self.rng, self.store
        self.now += timedelta(hours=rng.choice([0, 1, 5, 20]))
        now = self.now
        program_id = rng.choice([personal, shared])
        multiple = program_id == shared
        profile_pk = rng.choice(self.profiles)
        action = rng.choice(
            ["import", "import", "generate", "attach", "attach", "attach", "pool", "create", "detach",
             "activate", "activate", "rollback", "expiry", "delete_profile", "activate_with_expiry"]
        )  # fmt: skip
        if action == "import":
            batch = [self.code(program_id) for _ in range(rng.randint(1, 6))]
            rows = list(dict.fromkeys(batch))
            outcome = await store.import_codes(program_id, [(c, c) for c in rows], now, actor=ACTOR)
            self.codes[program_id].extend(sorted(outcome.inserted))
        elif action == "generate":
            count = rng.randint(1, 5)
            generation = await store.generate_codes(
                personal, range(count), drawing("P-####"), Template("P-####").key_pattern(True), 10_000, now, True,
                True, actor=ACTOR
            )  # fmt: skip
            self.codes[personal].extend(generation.codes)
        elif action in ("attach", "create"):
            code = self.code(program_id) if action == "attach" else self.fresh()
            outcome = await store.attach_code(
                program_id, code, code, profile_pk, multiple, action == "create", now, actor=ACTOR
            )
            if action == "create" and outcome is Outcome.DONE:
                self.codes[program_id].append(code)
        elif action == "pool":
            await store.attach_from_pool(personal, profile_pk, rng.random() < 0.3, now, actor=ACTOR)
        elif action == "detach":
            await store.detach(program_id, self.code(program_id), profile_pk, now, actor=ACTOR)
        elif action == "activate":
            bound = await sql_rows(
                self.database_url,
                "SELECT c.code, b.profile_pk FROM code_bindings b JOIN codes c ON c.id = b.code_id "
                "WHERE c.program_id = $1 AND b.activated IS NULL ORDER BY b.id",
                program_id,
            )
            code, who = self.code(program_id), profile_pk
            if bound and rng.random() < 0.8:
                code, who = rng.choice(bound).values()
            outcome = await store.activate(program_id, code, who if rng.random() < 0.7 else None, now, actor=ACTOR)
            self.activated += outcome is Outcome.DONE
        elif action == "rollback":
            who = profile_pk if rng.random() < 0.5 else None
            await store.update_code(program_id, self.code(program_id), who, None, False, False, now, actor=ACTOR)
        elif action in ("expiry", "activate_with_expiry"):
            when = rng.choice([None, now - timedelta(hours=3), now + timedelta(hours=rng.randint(1, 60))])
            activated = True if action == "activate_with_expiry" else None
            await store.update_code(
                program_id, self.code(program_id), profile_pk, when, True, activated, now, actor=ACTOR
            )
        else:
            if await store.delete_profile(profile_pk, True, now, actor=ACTOR):
                self.profiles.remove(profile_pk)
                await self.new_profile()
        return action


async def check(store: Store, database_url: str, program_id: int, now: datetime, context: Any) -> None:
    for moment in (now, now + timedelta(hours=30)):
        assert await store.program_stats(program_id, moment) == await oracle(database_url, program_id, moment), context
    # The per-day history adds up to the same figures, however the range is cut.
    first = (now - timedelta(days=3)).date()
    history = await store.program_history(program_id, first, now.date())
    stats = await store.program_stats(program_id, now)
    days = [history.before, *history.days]
    assert sum(d.created for d in days) == stats.total, context
    assert sum(d.attached - d.detached for d in days) == stats.attached, context
    assert sum(d.activated - d.deactivated for d in days) == stats.activated, context
    assert [d.day for d in history.days] == [first + timedelta(days=n) for n in range(len(history.days))]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_counter_statistics_equal_the_full_scan_after_random_changes(
    store: Store, database_url: str, seed: int
) -> None:
    run = Run(store, database_url, random.Random(seed))
    personal, shared = await run.setup()
    done: list[str] = []
    for index in range(STEPS):
        done.append(await run.step(personal, shared))
        if index % 10 == 9:
            for program_id in (personal, shared):
                await check(store, database_url, program_id, run.now, (seed, index, done[-10:]))
    # Every kind of change happened, activations succeeded, and codes ended up bound.
    assert set(done) >= {"import", "generate", "attach", "pool", "detach", "activate", "rollback", "delete_profile"}
    assert run.activated >= 3
    for program_id in (personal, shared):
        assert (await store.program_stats(program_id, run.now)).attached > 0


async def test_history_of_a_range_puts_earlier_days_in_before(store: Store) -> None:
    account_id = await store.ensure_account("acme", START)
    program = await store.create_program(account_id, {"name": "days"}, START)
    for offset, count in ((0, 3), (2, 5), (9, 7)):
        when = START + timedelta(days=offset)
        rows = [(f"D{offset}-{n}", f"D{offset}-{n}") for n in range(count)]
        await store.import_codes(program.id, rows, when, actor=ACTOR)
    history = await store.program_history(program.id, date(2025, 6, 3), date(2025, 6, 5))
    assert history.before.day == date(2025, 6, 2) and history.before.created == 3
    assert [(d.day.day, d.created) for d in history.days] == [(3, 5), (4, 0), (5, 0)]


async def test_migration_fills_the_counters_from_existing_rows(store: Store, database_url: str) -> None:
    """The migration's INSERT … SELECT: emptied counters, refilled by the same statement, give the same figures."""
    run = Run(store, database_url, random.Random(7))
    personal, shared = await run.setup()
    for _ in range(60):
        await run.step(personal, shared)
    before = [await store.program_stats(p, run.now) for p in (personal, shared)]
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    [sql] = [text for version, text in migration_files(kind) if version.startswith("0007")]
    fill = sql[sql.index("INSERT INTO program_days") :]
    await sql_rows(database_url, "DELETE FROM program_days")
    await sql_rows(database_url, fill)
    assert [await store.program_stats(p, run.now) for p in (personal, shared)] == before


async def test_activations_written_in_groups_keep_the_counters_exact(store: Store, database_url: str) -> None:
    """On PostgreSQL concurrent activations are written in groups (store.redemptions): each group's statement moves
    the codes' ``activated_count`` and the program's counters too. A shared code activated by many profiles at once
    counts once, whatever groups its activations land in."""
    from tests.store.test_redemptions import mixed_program, redeem_all

    program_id, first, second = await mixed_program(store)
    await redeem_all(store, program_id, first, second)
    account_id = await store.ensure_account("acme", START)
    shared = await store.create_program(account_id, {"name": "shared", "multiple_usage": True}, START)
    await store.import_codes(shared.id, [("UNI", "UNI")], START, actor=ACTOR)
    db_id = (await store.create_database(account_id, "more", START)).id
    pks = [(await save_profile(store, db_id, f"u{n}", None, [], {}, START)).pk for n in range(30)]
    for pk in pks:
        assert await store.attach_code(shared.id, "UNI", "UNI", pk, True, False, START, actor=ACTOR) is Outcome.DONE
    outcomes = await asyncio.gather(
        *(store.activate(shared.id, "UNI", pk, START, actor=ACTOR) for pk in pks),
        *(store.activate(program_id, "USED", None, START, actor=ACTOR) for _ in range(5)),
    )
    assert outcomes.count(Outcome.DONE) == 30
    for checked in (program_id, shared.id):
        assert await store.program_stats(checked, START) == await oracle(database_url, checked, START)
    assert (await store.program_stats(shared.id, START)).activated == 1
    if isinstance(store, PostgresStore):
        assert store._redemptions is not None and store._redemptions.groups_written >= 1, "no group was formed"


async def test_a_program_delete_takes_its_counters(store: Store, database_url: str) -> None:
    account_id = await store.ensure_account("acme", START)
    gone = await store.create_program(account_id, {"name": "gone"}, START)
    kept = await store.create_program(account_id, {"name": "kept"}, START)
    for program in (gone, kept):
        await store.import_codes(program.id, [("A", "A"), ("B", "B")], START, actor=ACTOR)
    assert await store.delete_program(account_id, gone.id, True) is True
    rows = await sql_rows(database_url, "SELECT program_id, created FROM program_days ORDER BY program_id")
    assert [(row["program_id"], row["created"]) for row in rows] == [(kept.id, 2)]
