"""Benchmark: ``generate`` of N codes next to a plain bulk load of N codes of the same shape into the same table.

    .venv/bin/python bench/generate.py --backend postgres --codes 1000000
    .venv/bin/python bench/generate.py --backend sqlite --codes 1000000 --rounds 2

The bulk load is what the database does at best with N new codes: ``COPY`` on PostgreSQL, one ``executemany`` in one
durable transaction on SQLite. The generation runs through the service (drawing, keying, the guard, conflict-skipping
inserts, one transaction), on a fresh program each time. Both run on a fresh database per round, alternately, so that
load from other processes falls on both alike. Numbers depend on the machine; compare the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from promocodes.domain.templates import Template
from promocodes.domain.times import to_micros, utcnow
from promocodes.models import Principal, Role
from promocodes.schemas import GenerateRequest
from promocodes.service import Services
from promocodes.store import open_store

TEMPLATE = "??????????????"  # 62**14 codes: the key-space guard never gets near


async def fresh_program(url: str) -> tuple[int, int]:
    """A migrated database with one empty program: ``(account_id, program_id)``."""
    store = open_store(url)
    await store.open()
    try:
        await store.migrate()
        account_id = await store.ensure_account("bench", utcnow())
        program = await store.create_program(account_id, {"name": "Bench"}, utcnow())
        return account_id, program.id
    finally:
        await store.close()


async def generate(url: str, count: int) -> float:
    account_id, program_id = await fresh_program(url)
    store = open_store(url)
    await store.open()
    try:
        started = time.perf_counter()
        result = await Services(store).promocodes.generate(
            Principal(account_id=account_id, role=Role.ADMIN),
            GenerateRequest(loyalty_id=program_id, count=count, template=TEMPLATE),
        )
        elapsed = time.perf_counter() - started
        assert result.generated == count
        return elapsed
    finally:
        await store.close()


async def copy_postgres(url: str, codes: list[str]) -> float:
    _, program_id = await fresh_program(url)
    conn = await asyncpg.connect(url)
    try:
        created = to_micros(utcnow())
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "codes",
                records=((program_id, code, code, created) for code in codes),
                columns=["program_id", "code", "code_key", "created"],
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def executemany_sqlite(url: str, path: Path, codes: list[str]) -> float:
    _, program_id = await fresh_program(url)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode = WAL")
        raw.execute("PRAGMA synchronous = FULL")
        created = to_micros(utcnow())
        started = time.perf_counter()
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(
            "INSERT INTO codes (program_id, code, code_key, created) VALUES (?, ?, ?, ?)",
            ((program_id, code, code, created) for code in codes),
        )
        raw.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        raw.close()


async def postgres_round(admin_url: str, count: int) -> tuple[float, float]:
    base = admin_url.rsplit("/", 1)[0]
    timings = []
    for which in ("load", "generate"):
        name = f"bench_generate_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = f"{base}/{name}"
        try:
            if which == "load":
                timings.append(await copy_postgres(url, Template(TEMPLATE).generate_many(count)))
            else:
                timings.append(await generate(url, count))
        finally:
            admin = await asyncpg.connect(admin_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return timings[0], timings[1]


async def sqlite_round(count: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        loaded, generated = Path(folder) / "load.db", Path(folder) / "generate.db"
        load = await executemany_sqlite(f"sqlite:///{loaded}", loaded, Template(TEMPLATE).generate_many(count))
        return load, await generate(f"sqlite:///{generated}", count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], required=True)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    options = parser.parse_args()
    baseline = "COPY" if options.backend == "postgres" else "executemany"
    for number in range(1, options.rounds + 1):
        if options.backend == "postgres":
            load, made = asyncio.run(postgres_round(options.postgres, options.codes))
        else:
            load, made = asyncio.run(sqlite_round(options.codes))
        print(
            f"round {number}: {options.backend} {options.codes:,} codes — {baseline} {load:.1f} s, "
            f"generate {made:.1f} s, ratio {made / load:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
