"""How fast the console's pages answer with a program of 1,000,000 codes (issue 8: every page under 300 ms), on
SQLite and on PostgreSQL.

    .venv/bin/python -m bench.console_pages [--codes 1000000] [--requests 9] [--backend sqlite|postgres|both]

Seeds a fresh database through the store: a program of ``--codes`` generated codes (one generate call: one
transaction), a second, small program (the programs list shows both), ``--attached`` codes attached from the pool to
as many profiles and a third of them activated (one store call each, as the API makes them), and an expiry on
``--expiring`` codes, half of them in the past (the API sets expiries one code at a time, so 10,000 is already a
lot; ``--expiring 500000`` shows the one cost that grows: counting the expired codes, docs/console.md#speed). Then
serves the application with uvicorn on a free port, signs in with an admin token through the console's own form,
and asks for each page ``--requests`` times with an httpx client, printing the median and the slowest in
milliseconds. The export (a download of every code) is not a page and is left out.

Each backend gets a fresh database (a temporary SQLite file; a new PostgreSQL database, dropped afterwards).
Figures depend on the machine and on what else runs on it: compare on the same one, with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx2
import uvicorn

from bench.database import fresh
from promocodes.config import Settings
from promocodes.domain.codes import code_key
from promocodes.domain.templates import Template
from promocodes.http.app import create_app
from promocodes.models import Actor, Match, MatchMode, Profile, Role
from promocodes.service import Services
from promocodes.store import open_store
from promocodes.store.profiles import ProfileData

ACTOR = Actor(token_id=None, token_name="bench")
TEMPLATE = "BENCH-########"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _given(data: ProfileData) -> Callable[[list[Profile]], ProfileData]:
    """The profile write of a seeded profile: always ``data``, whatever is found."""
    return lambda found: data


async def seed(url: str, codes: int, attached: int, expiring: int) -> tuple[str, int, str]:
    """The seeded database's admin token, the big program's id and one of its attached codes."""
    store = open_store(url, timeout=600.0)
    await store.open()
    try:
        await store.migrate()
        now = datetime.now(UTC)
        account_id = await store.ensure_account("default", now)
        program = await store.create_program(account_id, {"name": "Million", "template": TEMPLATE}, now)
        small = await store.create_program(account_id, {"name": "Small"}, now)
        await store.import_codes(small.id, [(f"S-{n}", f"S-{n}") for n in range(100)], now, actor=ACTOR)
        template = Template(TEMPLATE)

        def draw(count: int) -> tuple[list[str], list[str]]:
            drawn = template.generate_many(count)
            return drawn, [code_key(code, True) for code in drawn]

        started = time.perf_counter()
        generation = await store.generate_codes(
            program.id, range(codes), draw, template.key_pattern(True), 10**8, now, True, actor=ACTOR
        )
        print(f"  seeded {codes:,} codes in {time.perf_counter() - started:.1f} s", flush=True)
        database = await store.create_database(account_id, "main", now)
        started = time.perf_counter()
        sample = ""
        for number in range(attached):
            data = ProfileData(profile_id=f"p{number}", email=None, phones=[], fields={})
            profile = await store.upsert_profile(
                database.id, Match(MatchMode.PROFILE_ID, f"p{number}"), _given(data), now
            )
            code = await store.attach_from_pool(program.id, profile.pk, False, now, actor=ACTOR)
            assert code is not None
            sample = sample or code
            if number % 3 == 0:
                await store.activate(program.id, code, profile.pk, now, actor=ACTOR)
        print(f"  attached {attached:,} codes in {time.perf_counter() - started:.1f} s", flush=True)
        await expire_some(url, program.id, generation.after_id, now, max(1, codes // max(expiring, 1)))
        token = (await Services(store).tokens.issue("default", Role.ADMIN)).token
        assert isinstance(token, str)
        return token, program.id, sample
    finally:
        await store.close()


async def expire_some(url: str, program_id: int, after_id: int, now: datetime, step: int) -> None:
    """An expiry on every ``step``-th code, half of those in the past: one statement (the bench's seeding, not a
    path of the server)."""
    past = int((now - timedelta(days=1)).timestamp() * 1_000_000)
    future = int((now + timedelta(days=30)).timestamp() * 1_000_000)
    sql = (
        "UPDATE codes SET expire_date = CASE WHEN id % (2 * $5) = 0 THEN CAST($3 AS BIGINT) "
        "ELSE CAST($4 AS BIGINT) END WHERE program_id = $1 AND id > $2 AND id % $5 = 0"
    )
    if url.startswith("sqlite"):
        import sqlite3

        raw = sqlite3.connect(url.removeprefix("sqlite:///"))
        with raw:
            raw.execute(re.sub(r"\$(\d)", r"?\1", sql), (program_id, after_id, past, future, step))
        raw.execute("ANALYZE")
        raw.close()
    else:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql, program_id, after_id, past, future, step)
            await conn.execute("VACUUM ANALYZE codes")  # what autovacuum does soon after such a change
        finally:
            await conn.close()


@contextmanager
def serving(url: str) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(Settings(database_url=url)), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def pages_of(program_id: int, code: str) -> dict[str, str]:
    """The console's pages that show a program of many codes, by name: what :func:`page_times` asks for."""
    today = datetime.now(UTC).date()
    return {
        "programs list": "/console/programs",
        "program (charts, 30 days)": f"/console/programs/{program_id}",
        "program (charts, 366 days)": f"/console/programs/{program_id}?from={today - timedelta(days=365)}",
        "code": f"/console/programs/{program_id}/code?code={code}",
        "edit form": f"/console/programs/{program_id}/edit",
        "delete confirmation": f"/console/programs/{program_id}/delete",
    }


def page_times(base: str, token: str, program_id: int, code: str, requests: int) -> dict[str, list[float]]:
    """Sign in to the console served at ``base`` and ask for each page ``requests`` times (after one to warm the
    caches): the times in milliseconds, by page. Every answer must be a 200. Also the bench harness's console
    workload (bench/workloads/console.py)."""
    timings: dict[str, list[float]] = {}
    with httpx2.Client(base_url=base, trust_env=False, timeout=60) as client:
        form = client.get("/console/sign-in")
        found = CSRF.search(form.text)
        assert found is not None
        client.post("/console/sign-in", data={"csrf": found.group(1), "token": token})
        for name, path in pages_of(program_id, code).items():
            times = []
            for _ in range(requests + 1):
                started = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (path, answer.status_code)
            timings[name] = times[1:]  # the first warms the caches
    return timings


def measure(url: str, token: str, program_id: int, code: str, requests: int) -> None:
    with serving(url) as base:
        for name, times in page_times(base, token, program_id, code, requests).items():
            print(f"  {name:28} median {statistics.median(times):7.1f} ms   slowest {max(times):7.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--attached", type=int, default=3000, help="codes attached from the pool, a third activated")
    parser.add_argument("--expiring", type=int, default=10_000, help="codes with an expiry, half of them past")
    parser.add_argument("--requests", type=int, default=9, help="requests per page (after one to warm up)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    options = parser.parse_args()
    for backend in ["sqlite", "postgres"] if options.backend == "both" else [options.backend]:
        print(f"{backend}: {options.codes:,} codes, {options.attached:,} attached, {options.expiring:,} expiring")
        with fresh(backend) as url:  # a temporary SQLite file, or a PostgreSQL database dropped afterwards
            token, program_id, code = asyncio.run(seed(url, options.codes, options.attached, options.expiring))
            measure(url, token, program_id, code, options.requests)


if __name__ == "__main__":
    main()
