"""``python -m bench``: every workload of docs/performance.md, each next to its baseline in the same run.

    python -m bench                      # SQLite (temp file) and the local PostgreSQL (a fresh database)
    python -m bench --quick              # smoke mode: tiny data, 1-second loads, SQLite only; seconds
    python -m bench --database-url postgresql://postgres@127.0.0.1:5432/mydb --workloads activate,get

Needs wrk, hey and curl (and pgbench for PostgreSQL): `apt-get install wrk hey curl postgresql-client`. Prints one
table and writes it as JSON under bench/results/. Every step is bounded in time; Ctrl-C stops the servers it
started and drops the databases it created.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType

import asyncpg
from rich.console import Console

from bench import database
from bench.load import Failed, missing
from bench.report import RESULTS, Figure, current_commit, print_table, write_json
from bench.server import Server
from bench.workloads import bulk, console, requests, startup
from bench.workloads.context import Context, Options

Workload = Callable[[Context], list[Figure]]

#: name → (function, needs the server, timeout in seconds as a function of the options), in the order they run:
#: the bulk import first (its program is exported, shown in the console, then attached from), the request steps
#: after the exports (pool attach last: it changes the imported program), start-up on its own servers at the end.
WORKLOADS: dict[str, tuple[Workload, bool, Callable[[Options], float]]] = {
    "import": (bulk.import_cli, False, lambda o: 120 + o.codes / 1500),
    "generate": (bulk.generate, False, lambda o: 120 + o.codes / 2000),
    "import-api": (bulk.import_api, True, lambda o: 120 + o.api_batch * o.api_requests / 2000),
    "export": (bulk.export_cli, False, lambda o: 120 + o.codes / 2000),
    "export-http": (bulk.export_http, True, lambda o: 120 + o.codes / 1000),
    "console": (console.console_pages, True, lambda o: 120 + o.codes / 5000),
    "get": (requests.get, True, lambda o: 120 + 4 * o.seconds),
    "latency": (requests.latency, True, lambda o: 120 + 2 * o.seconds),
    "activate": (requests.activate, True, lambda o: 120 + 4 * len(o.activate_connections) * o.seconds),
    "attach": (requests.attach, True, lambda o: 120 + 4 * o.seconds),
    "startup": (startup.startup, False, lambda o: 120),
}
#: a workload that reads what another made runs that one too
NEEDS = {"export": "import", "export-http": "import", "console": "import", "attach": "import", "latency": "get"}
#: 500,000 codes keeps a full run (both databases) near 10 minutes on a 2-core machine (docs/performance.md#choices)
DEFAULT_CODES = 500_000
DEFAULT_SECONDS = 5.0


class TimedOut(Exception):
    pass


#: what a workload or a database's set-up may fail with: reported in one line (a row of the table), never a
#: traceback, and the run goes on
TROUBLE = (Failed, OSError, RuntimeError, LookupError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds``: the workload's blocking wait (a child, a socket, a database call) is interrupted
    by :class:`TimedOut`, and the run goes on with the next one."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimedOut(f"ran out of its {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Options, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny data, 1-second loads, SQLite only")
    parser.add_argument("--database-url", help="run on this database only (migrated and seeded, never dropped)")
    parser.add_argument(
        "--adapters", help="comma-separated: sqlite, postgres (default both; quick: sqlite) — fresh databases"
    )
    parser.add_argument("--workloads", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    parser.add_argument("--seconds", type=float, help=f"seconds per load step (default {DEFAULT_SECONDS:g}; quick 1)")
    parser.add_argument("--codes", type=int, help=f"codes imported, exported, generated (default {DEFAULT_CODES:,})")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 1.0 if args.quick else DEFAULT_SECONDS
    codes = args.codes if args.codes is not None else 2_000 if args.quick else DEFAULT_CODES
    if seconds <= 0 or codes < 1:
        parser.error("--seconds and --codes must be positive")
    api_batch = min(100_000, max(1, codes // 2))
    options = Options(
        quick=args.quick,
        seconds=seconds,
        codes=codes,
        activate_connections=(1, 16, 64),
        connections=64,
        workers={"sqlite": 1, "postgres": 2},
        api_batch=api_batch,
        api_requests=1 if args.quick else max(1, min(3, codes // api_batch)),
        startup_workers=(1, 4),
    )
    chosen = list(WORKLOADS) if not args.workloads else [name.strip() for name in args.workloads.split(",")]
    unknown = [name for name in chosen if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    for name in list(chosen):
        if name in NEEDS and NEEDS[name] not in chosen:
            chosen.append(NEEDS[name])
    return args, options, [name for name in WORKLOADS if name in chosen]


def tools_for(adapters: list[str], chosen: list[str]) -> list[str]:
    tools = []
    if {"activate", "get", "attach"} & set(chosen):
        tools.append("wrk")
    if "latency" in chosen:
        tools.append("hey")
    if "export-http" in chosen:
        tools.append("curl")
    if "postgres" in adapters and {"activate", "get", "attach"} & set(chosen):
        tools.append("pgbench")
    return tools


def run_database(url: str, options: Options, chosen: list[str], out: Console, sink: list[Figure]) -> None:
    """Every chosen workload on one database, its server started once for the workloads that need it; each
    workload's figures go to ``sink`` as soon as it ends (so that Ctrl-C still reports what was measured)."""
    adapter = database.adapter_of(url)
    out.print(f"[bold]{adapter}[/]: seeding …")
    needs_codes = "activate" in chosen or "get" in chosen
    attached = requests.codes_needed(adapter, options.activate_connections, options.seconds) if needs_codes else 1
    profiles = requests.profiles_needed(options.seconds) if "attach" in chosen else 1
    with tempfile.TemporaryDirectory(prefix="promocodes-bench-work-") as folder:
        ctx = Context(options, url, adapter, database.seed(url, attached, profiles), Path(folder))
        server: Server | None = None
        try:
            for name in chosen:
                function, needs_server, timeout = WORKLOADS[name]
                if not needs_server and server is not None and name == "startup":
                    server.stop()  # start-up is measured on an otherwise idle machine
                    server = ctx.server = None
                out.print(f"[bold]{adapter}[/]: {name} …")
                started = time.perf_counter()
                try:
                    with time_limit(timeout(options)):
                        if needs_server and server is None:
                            server = ctx.server = Server(url, options.workers[adapter]).__enter__()
                        figures = function(ctx)
                except (TimedOut, *TROUBLE) as error:
                    figures = [Figure(name, adapter, None, "", note=f"FAILED: {error}")]
                ctx.figures += figures
                sink += figures
                for figure in figures:
                    figure.extra.setdefault("workload_seconds", round(time.perf_counter() - started, 1))
        finally:
            if server is not None:
                server.stop()


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: servers stopped, databases dropped


def main(argv: list[str] | None = None) -> int:
    args, options, chosen = parse(argv)
    signal.signal(signal.SIGTERM, _terminated)
    out = Console(width=None if sys.stdout.isatty() else 200)
    if args.database_url:
        urls_or_adapters = [args.database_url]
    elif args.adapters:
        urls_or_adapters = [name.strip() for name in args.adapters.split(",")]
        if not set(urls_or_adapters) <= {"sqlite", "postgres"}:
            print(f"--adapters takes sqlite and/or postgres, not {args.adapters!r}", file=sys.stderr)
            return 2
    else:
        urls_or_adapters = ["sqlite"] if options.quick else ["sqlite", "postgres"]
    adapters = [database.adapter_of(item) if "://" in item else item for item in urls_or_adapters]
    lack = missing(tools_for(adapters, chosen))
    if lack:
        print(lack, file=sys.stderr)
        return 2
    started = time.perf_counter()
    commit = current_commit()  # before the run: the code it measures
    figures: list[Figure] = []
    try:
        for item in urls_or_adapters:
            place = nullcontext(item) if "://" in item else database.fresh(item)
            try:
                with place as url:
                    run_database(url, options, chosen, out, figures)
            except TROUBLE as error:  # the database could not be created or seeded
                adapter = database.adapter_of(item) if "://" in item else item
                out.print(f"[red]{adapter}[/]: {type(error).__name__}: {error}")
                figures.append(Figure("set-up", adapter, None, "", note=f"FAILED: {type(error).__name__}: {error}"))
    except KeyboardInterrupt:
        out.print("[red]interrupted[/]: the servers were stopped; the figures so far follow")
    wall = time.perf_counter() - started
    print_table(figures, out)
    shown = {key: value for key, value in vars(options).items()}
    shown["workloads"] = chosen
    shown["database_url"] = args.database_url
    path = write_json(figures, shown, wall, commit, args.results)
    out.print(f"wall time {wall:.0f} s; JSON: {path}")
    return 1 if any(figure.workload == "set-up" for figure in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
