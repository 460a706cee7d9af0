"""What the history costs a big import: a 1,000,000-code import through the store, in one call (one transaction),
timed on SQLite and on PostgreSQL.

    .venv/bin/python bench/history_import.py [--codes 1000000] [--runs 3] [--backend sqlite|postgres|both]

The import writes ONE `created` event and gives every new code its id in `codes.created_event` within the same bulk
insert (docs/api.md#history). To compare with the code before the history, run the same script with the older
source first on the path (the script passes `actor` only to a store that takes it):

    git archive <commit before> src | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/history_import.py

Each run imports into a fresh database (a new SQLite file; a new PostgreSQL database, dropped afterwards), so runs do
not grow each other's indexes. Prints each run and the median. Figures depend on the machine: compare before and
after on the same one, with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

import promocodes
from promocodes.store import Store, open_store

PG_ADMIN = os.environ.get("PROMOCODES_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def actor_argument() -> dict[str, Any]:
    """``actor=`` for a store whose ``import_codes`` takes one (with the history), nothing for an older one."""
    if "actor" not in inspect.signature(Store.import_codes).parameters:
        return {}
    from promocodes.models import Actor

    return {"actor": Actor(token_id=None, token_name="bench")}


async def one_run(url: str, rows: list[tuple[str, str]]) -> float:
    """Seconds for one import of ``rows`` into an empty program of a freshly migrated database."""
    store = open_store(url, timeout=30.0)
    await store.open()
    try:
        await store.migrate()
        account_id = await store.ensure_account("bench", NOW)
        program = await store.create_program(account_id, {"name": "bench"}, NOW)
        started = time.perf_counter()
        outcome = await store.import_codes(program.id, rows, NOW, **actor_argument())
        elapsed = time.perf_counter() - started
        assert len(outcome.inserted) == len(rows), "every code must be new"
        return elapsed
    finally:
        await store.close()


async def sqlite_run(rows: list[tuple[str, str]]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        return await one_run(f"sqlite:///{Path(folder) / 'bench.db'}", rows)


async def postgres_run(rows: list[tuple[str, str]]) -> float:
    name = f"promocodes_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        return await one_run(PG_ADMIN.rpartition("/")[0] + "/" + name, rows)
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    options = parser.parse_args()
    rows = [(f"BENCH-{number:08d}", f"BENCH-{number:08d}") for number in range(options.codes)]
    version = "with history" if actor_argument() else "without history"
    print(f"promocodes from {Path(promocodes.__file__).parent} ({version}), {options.codes:,} codes per import")
    backends = ["sqlite", "postgres"] if options.backend == "both" else [options.backend]
    for backend in backends:
        run = sqlite_run if backend == "sqlite" else postgres_run
        times = []
        for number in range(1, options.runs + 1):
            times.append(await run(rows))
            print(f"  {backend:8} run {number}: {times[-1]:6.2f} s", flush=True)
        print(f"{backend:10} median {statistics.median(times):6.2f} s")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
