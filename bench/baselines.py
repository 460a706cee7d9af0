"""What the database alone does with the same statements on the same machine: the baselines.

- :func:`pgbench` runs one of the server's own statements (``bench.statements``) as one transaction per run of the
  script, ``-M prepared`` (the server's driver prepares its statements too), at the concurrency of the HTTP step
  it is compared with. Each client walks its own slice of the codes, as the HTTP step's wrk threads do.
- :func:`sqlite_loop` runs the same statement from one ``sqlite3`` connection in a loop — WAL and
  ``synchronous = FULL`` as the server sets them, each write its own ``BEGIN IMMEDIATE`` … ``COMMIT``. SQLite
  takes one writer at a time, so one connection is its ceiling at any concurrency.
- Bulk: ``COPY`` into / out of PostgreSQL, ``executemany`` (10,000 rows per transaction) and a cursor on SQLite,
  against a scratch table made like ``codes`` (same columns, unique key and indexes) or the same rows.

Every baseline reports how many of its statements found a row (``matched``): a baseline that ran out of codes would
look fast for doing nothing, and the report shows it.
"""

from __future__ import annotations

import asyncio
import csv
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.database import sqlite_path
from bench.load import Failed, Measured, run_measured
from bench.statements import substitute, to_sqlite


@dataclass
class Rate:
    """Statements per second, how many found a row, and (pgbench) the generator's CPU share."""

    rate: float
    done: int
    matched: int
    generator_cpu: float | None = None


def pgbench(
    url: str,
    sql: str,
    values: dict[int, str],
    clients: int,
    seconds: float,
    defines: dict[str, int],
    changed: Callable[[], int] | None,
) -> Rate:
    """``sql`` with its ``$n`` replaced by ``values`` (pgbench expressions over ``:n``, the request's number: each
    client counts ``:i`` up from 0 through its slice of ``[first, first + count)``), ``clients`` clients for
    ``seconds``. ``changed()`` counts the rows the statement changes, before and after the run: their difference is
    what it matched (None for a read, which changes nothing: every run counts)."""
    script = (
        "\\set i :i + 1\n"
        "\\set n :first + :client_id * (:count / :clients) + (:i % (:count / :clients))\n"
        f"{substitute(sql, values)};\n"
    )
    before = changed() if changed is not None else 0
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
        file.write(script)
        file.flush()
        duration = max(1, round(seconds))
        command = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients))]
        command += ["-T", str(duration), "-f", file.name, "-D", "i=-1", "-D", f"clients={clients}"]
        for name, value in defines.items():
            command += ["-D", f"{name}={value}"]
        done = _pgbench_run([*command, url], timeout=duration + 60)
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    if tps is None or processed is None:
        raise Failed(f"pgbench printed no rate: {done.stdout[-300:]!r}")
    count = int(processed.group(1))
    matched = changed() - before if changed is not None else count
    return Rate(float(tps.group(1)), count, matched, done.cpu_share)


def sqlite_loop(
    url: str, sql: str, arguments: Callable[[int], Sequence[Any]], seconds: float, write: bool, limit: int
) -> Rate:
    """``sql`` from one connection for ``seconds`` (or ``limit`` runs, whichever ends first), with ``arguments(i)``
    for its i-th run (i = 0, 1, …); a write is its own durable transaction. Counts the runs that returned a row."""
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        statement = to_sqlite(sql)
        done = matched = 0
        started = time.perf_counter()
        deadline = started + seconds
        while done < limit and time.perf_counter() < deadline:
            if write:
                conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(statement, arguments(done)).fetchone()
            if write:
                conn.execute("COMMIT")
            done += 1
            matched += row is not None
        return Rate(done / (time.perf_counter() - started), done, matched)
    finally:
        conn.close()


def _pgbench_run(command: list[str], timeout: float) -> Measured:
    """pgbench, tried again (twice, 5 s apart) when PostgreSQL refused a connection: its ``max_connections`` is
    shared with the server's pools and any other client of the machine, which may hold connections a moment."""
    for attempt in range(3):
        done = run_measured(command, timeout=timeout, check=False)
        if done.returncode == 0:
            return done
        if "could not create connection" not in done.stderr or attempt == 2:
            break
        time.sleep(5)
    last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
    hint = " (PostgreSQL's max_connections is shared with the server's pools)" if "connection" in last[0] else ""
    raise Failed(f"pgbench exited {done.returncode}: {last[0][:200]}{hint}")


SCRATCH = "bench_scratch_codes"


def copy_in(url: str, rows_file: Path) -> float:
    """Seconds for one ``COPY`` of ``rows_file`` (CSV: program_id, code, code_key, created) into a scratch table
    made ``LIKE codes INCLUDING ALL`` (same columns, defaults, unique key and indexes); dropped afterwards."""

    async def run() -> float:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}; CREATE TABLE {SCRATCH} (LIKE codes INCLUDING ALL)")
            started = time.perf_counter()
            await conn.copy_to_table(
                SCRATCH, source=rows_file, columns=["program_id", "code", "code_key", "created"], format="csv"
            )
            took = time.perf_counter() - started
            await conn.execute(f"DROP TABLE {SCRATCH}")
            return took
        finally:
            await conn.close()

    return asyncio.run(run())


def executemany_in(url: str, rows: list[tuple[int, str, str, int]], per_transaction: int = 10_000) -> float:
    """Seconds for ``executemany`` of ``rows`` into a scratch copy of ``codes`` (its CREATE TABLE and indexes
    from ``sqlite_master``), ``per_transaction`` rows per durable transaction; dropped afterwards."""
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        schema = conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'codes' AND sql IS NOT NULL ORDER BY type DESC"
        ).fetchall()
        conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
        for (statement,) in schema:  # the table first ('table' > 'index'), then its indexes
            renamed = statement.replace("CREATE TABLE codes", f"CREATE TABLE {SCRATCH}")
            renamed = re.sub(r"\bON codes\b", f"ON {SCRATCH}", renamed)
            renamed = re.sub(r"CREATE (UNIQUE )?INDEX (\w+)", rf"CREATE \1INDEX {SCRATCH}_\2", renamed)
            conn.execute(renamed)
        insert = f"INSERT INTO {SCRATCH} (program_id, code, code_key, created) VALUES (?, ?, ?, ?)"
        started = time.perf_counter()
        for start in range(0, len(rows), per_transaction):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows[start : start + per_transaction])
            conn.execute("COMMIT")
        took = time.perf_counter() - started
        conn.execute(f"DROP TABLE {SCRATCH}")
        return took
    finally:
        conn.close()


#: the rows an export writes, in one statement (the server reads them page by page: docs/api.md#export_all)
EXPORT_ROWS = (
    "SELECT c.code, max(b.attached) AS attached, max(b.activated) AS activated "
    "FROM codes c LEFT JOIN code_bindings b ON b.code_id = c.id WHERE c.program_id = {program} "
    "GROUP BY c.id, c.code ORDER BY c.id"
)


def copy_out(url: str, program_id: int, output: Path) -> float:
    """Seconds for ``COPY (the export's rows) TO`` a CSV file."""

    async def run() -> float:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            started = time.perf_counter()
            await conn.copy_from_query(EXPORT_ROWS.format(program=int(program_id)), output=output, format="csv")
            return time.perf_counter() - started
        finally:
            await conn.close()

    return asyncio.run(run())


def cursor_out(url: str, program_id: int, output: Path) -> float:
    """Seconds for a sqlite3 cursor over the export's rows, written as CSV to a file."""
    conn = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        started = time.perf_counter()
        with output.open("w", newline="") as file:
            csv.writer(file).writerows(conn.execute(EXPORT_ROWS.format(program=int(program_id))))
        return time.perf_counter() - started
    finally:
        conn.close()
