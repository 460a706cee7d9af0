"""Benchmark: the server's `activate` and `get` throughput next to what the database alone does with the same
statements on the same machine.

    .venv/bin/python bench/run.py --backend postgres --codes 200000 --seconds 10
    .venv/bin/python bench/run.py --backend sqlite

Needs `wrk` (Debian package) for the HTTP load and `pgbench` for the PostgreSQL baseline. It seeds a program with
``--codes`` attached codes, starts ``promocodes serve`` on a free port, runs wrk against ``activate`` (each request a
different code) and ``get``, then runs the database-only baseline, and prints one table. Numbers depend on the
machine; compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg

from promocodes.domain.times import to_micros, utcnow
from promocodes.models import Actor, Match, MatchMode, Role
from promocodes.service import Services
from promocodes.store import open_store
from promocodes.store.profiles import ProfileData

HERE = Path(__file__).resolve().parent
PROMOCODES = [sys.executable, "-m", "promocodes"]
PG_ADMIN = os.environ.get("PROMOCODES_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def prepare_postgres(name: str) -> str:
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return PG_ADMIN.rpartition("/")[0] + "/" + name


BENCH = Actor(token_id=None, token_name="bench")  # whom the seeded codes' history names


async def seed(url: str, codes: int) -> tuple[str, int]:
    """An admin token and a program whose ``codes`` codes (B0000001…) are all attached to one profile."""
    store = open_store(url)
    await store.open()
    await store.migrate()
    services = Services(store)
    token = await services.tokens.issue("bench", Role.ADMIN)
    assert isinstance(token.token, str)
    account_id = await store.ensure_account("bench", utcnow())
    program = await store.create_program(account_id, {"name": "bench"}, utcnow())
    database = await store.create_database(account_id, "bench", utcnow())
    profile = await store.upsert_profile(
        database.id,
        Match(MatchMode.PROFILE_ID, "b" * 24),
        lambda found: ProfileData(profile_id="b" * 24, email="bench@example.org", phones=[], fields={}),
        utcnow(),
    )
    batch = 20_000
    for start in range(1, codes + 1, batch):
        rows = [(f"B{n:07d}", f"B{n:07d}") for n in range(start, min(start + batch, codes + 1))]
        await store.import_codes(program.id, rows, utcnow(), actor=BENCH)
    await store.close()
    # Binding 200k codes one request at a time would take longer than the benchmark: do it in one statement.
    now = to_micros(utcnow())
    bind = (
        f"INSERT INTO code_bindings (code_id, profile_pk, attached) SELECT id, {profile.pk}, {now} FROM codes "
        f"WHERE program_id = {program.id}; UPDATE codes SET attached_count = 1 WHERE program_id = {program.id};"
    )
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executescript(bind)
    else:
        conn = await asyncpg.connect(url)
        await conn.execute(bind)
        await conn.execute("ANALYZE")  # fresh statistics, as a long-running database would have
        await conn.close()
    return token.token, program.id


def wrk(script: str, url: str, seconds: int, connections: int, env: dict[str, str]) -> tuple[float, str]:
    threads = 2
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(HERE / script), url],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "BENCH_THREADS": str(threads)},
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    extra = "; ".join(line.strip() for line in result.stdout.splitlines() if "latency" in line or "activations" in line)
    return rate, extra


def pgbench_baseline(url: str, loyalty_id: int, codes: int, seconds: int, clients: int) -> float:
    result = subprocess.run(
        [
            "pgbench",
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(HERE / "pgbench_activate.sql"),
            "-D",
            f"codes={codes}",
            "-D",
            f"loyalty_id={loyalty_id}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"tps = ([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]


def sqlite_baseline(path: str, loyalty_id: int, codes: int, seconds: int) -> float:
    """One connection, the server's statements for one activation (program lookup, conditional UPDATE and its
    history event; the token comes from the worker's cache), each activation its own durable transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    # Codes from the top of the range down: the HTTP run used them from the bottom up, so these are unused.
    done, n, deadline = 0, codes + 1, time.monotonic() + seconds
    while time.monotonic() < deadline and n > 1:
        n -= 1
        conn.execute("SELECT id, account_id, name FROM programs WHERE id = ? AND account_id = 1", (loyalty_id,))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT id FROM programs WHERE id = ?", (loyalty_id,))
        activated = conn.execute(
            "UPDATE code_bindings SET activated = 1 WHERE id = (SELECT b.id FROM code_bindings b JOIN codes c "
            "ON c.id = b.code_id WHERE c.program_id = ? AND c.code_key = ? AND b.activated IS NULL "
            "AND (c.expire_date IS NULL OR c.expire_date > 1) ORDER BY b.id LIMIT 1) AND activated IS NULL "
            "RETURNING code_id, profile_pk",
            (loyalty_id, f"B{n:07d}"),
        ).fetchone()
        conn.execute(
            "INSERT INTO code_events (program_id, code_id, time, event, token_id, token_name, details, profile_id, "
            "database_id) SELECT ?, ?, 1, 'activated', 1, 'bench', NULL, profile_id, database_id FROM profiles "
            "WHERE id = ?",
            (loyalty_id, activated[0], activated[1]),
        )
        conn.execute("COMMIT")
        done += 1
    conn.close()
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--codes", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk",) + (("pgbench",) if args.backend == "postgres" else ()):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs `{tool}` (apt-get install {'wrk' if tool == 'wrk' else 'postgresql-client'})")

    workdir = Path(tempfile.mkdtemp(prefix="promocodes-bench-"))
    if args.backend == "postgres":
        url = asyncio.run(prepare_postgres("promocodes_bench"))
    else:
        url = f"sqlite:///{workdir}/bench.db"
    print(f"seeding {args.codes} attached codes into {url} ...", flush=True)
    token, loyalty_id = asyncio.run(seed(url, args.codes))

    port = free_port()
    server = subprocess.Popen(
        [*PROMOCODES, "serve", "--port", str(port), "--workers", str(args.workers), "--database-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        env = {"BENCH_TOKEN": token, "BENCH_LOYALTY_ID": str(loyalty_id), "BENCH_CODES": str(args.codes)}
        base = f"http://127.0.0.1:{port}/api/v1.1/promocodes"
        get_rate, get_extra = wrk("get.lua", f"{base}/get", args.seconds, args.connections, env)
        activate_rate, activate_extra = wrk("activate.lua", f"{base}/activate", args.seconds, args.connections, env)
    finally:
        server.terminate()
        server.wait(timeout=30)

    if args.backend == "postgres":
        baseline = pgbench_baseline(url, loyalty_id, args.codes, args.seconds, args.connections)
        baseline_name = f"pgbench, same statements, {args.connections} clients"
    else:
        baseline = sqlite_baseline(url.removeprefix("sqlite:///"), loyalty_id, args.codes, args.seconds)
        baseline_name = "sqlite3 loop, same statements, 1 connection"
    print()
    print(
        f"backend {args.backend}, {args.workers} workers, {args.connections} connections, {args.seconds}s each, "
        f"{os.cpu_count()} cores"
    )
    print(f"  get       {get_rate:10.0f} req/s   {get_extra}")
    print(f"  activate  {activate_rate:10.0f} req/s   {activate_extra}")
    print(f"  database  {baseline:10.0f} tx/s    ({baseline_name})")
    print(f"  activate / database = {activate_rate / baseline:.2f}")


if __name__ == "__main__":
    main()
