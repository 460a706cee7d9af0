"""Bulk workloads: import (the command line, and API requests of ``--api-batch`` codes), export (the command
line's CSV, and ``export_all`` over HTTP in JSON and XML), generate — each timed next to the database's own bulk
path over the same rows: ``COPY`` on PostgreSQL, ``executemany`` / a cursor on SQLite (bench/baselines.py).

The server's memory is judged by its growth: each process's peak RSS is reset (``/proc/PID/clear_refs``) before a
step, and the growth is the largest peak afterwards minus that process's RSS before."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx2
import msgspec

from bench import baselines
from bench.database import adapter_of, create_program, execute
from bench.load import Failed, Measured, run_measured
from bench.report import Figure, Target
from bench.server import Server
from bench.workloads.context import Context
from promocodes.domain.templates import Template
from promocodes.domain.times import to_micros, utcnow

PROMOCODES = [sys.executable, "-m", "promocodes"]
TEMPLATE = "??????????????"  # 62**14 codes: the generation's key-space guard never gets near
API = "/api/v1.1/promocodes"


def random_codes(count: int) -> list[str]:
    """``count`` distinct random codes of 14 letters and digits, as a shop's own codes might be."""
    codes = list(dict.fromkeys(Template(TEMPLATE).generate_many(count)))
    while len(codes) < count:
        codes = list(dict.fromkeys(codes + Template(TEMPLATE).generate_many(count - len(codes))))
    return codes


def _count(ctx: Context, program: int) -> int:
    return int(execute(ctx.url, "SELECT count(*) FROM codes WHERE program_id = $1", program)[0][0])


def import_cli(ctx: Context) -> list[Figure]:
    """``promocodes import`` of ``--codes`` random codes into a new program (kept for export, the console and the
    pool attach), against COPY / executemany of the same codes into a scratch table made like ``codes``."""
    count = ctx.options.codes
    codes = random_codes(count)
    program = create_program(ctx.url, ctx.seed.account_id, "bulk")
    source = ctx.workdir / "codes.csv"
    source.write_text("code\n" + "\n".join(codes) + "\n")
    command = [*PROMOCODES, "import", str(source), "--program", str(program), "--database-url", ctx.url]
    done = run_measured(command, timeout=120 + count / 2000)
    stored = _count(ctx, program)
    if stored != count:
        raise Failed(f"promocodes import stored {stored} of {count} codes")
    ctx.bulk_program = program
    created = to_micros(utcnow())
    if adapter_of(ctx.url) == "postgres":
        rows_file = ctx.workdir / "rows.csv"
        rows_file.write_text("".join(f"{program},{code},{code},{created}\n" for code in codes))
        baseline, name = baselines.copy_in(ctx.url, rows_file), "COPY, one statement"
        target = Target("ratio", "<=", 1.5)
    else:
        rows = [(program, code, code, created) for code in codes]
        baseline, name = baselines.executemany_in(ctx.url, rows), "executemany, 10k per transaction"
        target = Target("ratio", "<=", 1.3)
    return [
        Figure(
            f"import CLI {count:,}",
            ctx.adapter,
            done.wall,
            "s",
            baseline,
            "s",
            name,
            ratio_kind="time",
            target=target,
            generator_cpu=done.cpu_share,
            note=f"CLI peak RSS {done.peak_rss_mb:.0f} MB",
            extra={"codes": count, "cli_peak_rss_mb": done.peak_rss_mb, "cli_cpu_seconds": done.cpu},
        ).settle()
    ]


def reset_peaks(server: Server) -> dict[int, float]:
    """Reset each server process's peak RSS; its RSS now, per process."""
    before = {}
    for pid in server.all_pids():
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before[pid] = server.rss_mb([pid])
    return before


def growth(server: Server, before: dict[int, float]) -> float:
    return max((server.peak_rss_mb([pid]) - rss for pid, rss in before.items()), default=0.0)


def import_api(ctx: Context) -> list[Figure]:
    """``--api-requests`` import requests of ``--api-batch`` new codes each, one after the other."""
    server, batch = ctx.running, ctx.options.api_batch
    program = create_program(ctx.url, ctx.seed.account_id, "api-import")
    bodies = [
        msgspec.json.encode({"loyalty_id": program, "codes": random_codes(batch)})
        for _ in range(ctx.options.api_requests)
    ]
    before = reset_peaks(server)
    took = []
    headers = {"Authorization": f"Bearer {ctx.seed.token}", "Content-Type": "application/json"}
    with httpx2.Client(base_url=server.base, timeout=120 + batch / 1000, trust_env=False, headers=headers) as client:
        for body in bodies:
            started = time.perf_counter()
            answer = client.post(f"{API}/import", content=body)
            took.append(time.perf_counter() - started)
            envelope = answer.json()
            if answer.status_code != 200 or envelope.get("inserted") != batch:
                raise Failed(f"import answered HTTP {answer.status_code}, inserted {envelope.get('inserted')}")
    grew = growth(server, before)
    baseline = ctx.figure(f"import CLI {ctx.options.codes:,}")
    per_batch = None if baseline is None or baseline.baseline is None else baseline.baseline * batch / ctx.options.codes
    return [
        Figure(
            f"import API {batch:,}/request",
            ctx.adapter,
            max(took),
            "s (slowest)",
            per_batch,
            "s",
            "the import baseline, pro rata",
            ratio_kind="time",
            target=Target("value", "<=", 2.0),
            note=f"{len(took)} requests, median {statistics.median(took):.2f} s; server RSS growth {grew:.0f} MB",
            extra={"seconds": took, "server_rss_growth_mb": grew},
        ).settle()
    ]


def export_cli(ctx: Context) -> list[Figure]:
    """``promocodes export`` (CSV) of the imported program, against COPY TO / a sqlite3 cursor over its rows."""
    program = ctx.bulk_program
    if program is None:
        raise Failed("no imported program to export")
    output = ctx.workdir / "export.csv"
    command = [*PROMOCODES, "export", "--program", str(program), "-o", str(output), "--database-url", ctx.url]
    done = run_measured(command, timeout=120 + ctx.options.codes / 2000)
    lines = sum(1 for _ in output.open())
    if lines < ctx.options.codes:
        raise Failed(f"promocodes export wrote {lines} lines for {ctx.options.codes} codes")
    baseline = _export_baseline(ctx, program)
    figure = _export_figure("export CLI csv", ctx, done, baseline, 0.5, f"CLI peak RSS {done.peak_rss_mb:.0f} MB")
    figure.extra["cli_peak_rss_mb"] = done.peak_rss_mb
    return [figure]


def _export_baseline(ctx: Context, program: int) -> tuple[float, str]:
    output = ctx.workdir / "baseline-export.csv"
    if ctx.adapter == "postgres":
        return baselines.copy_out(ctx.url, program, output), "COPY (the rows) TO"
    return baselines.cursor_out(ctx.url, program, output), "sqlite3 cursor, csv"


def _export_figure(
    workload: str, ctx: Context, done: Measured, baseline: tuple[float, str], bound: float, note: str
) -> Figure:
    """An export's time next to the baseline's over the same rows; the ratio is of rates (baseline time / time)."""
    seconds, name = baseline
    return Figure(
        workload,
        ctx.adapter,
        done.wall,
        "s",
        seconds,
        "s",
        name,
        ratio=seconds / done.wall,
        ratio_kind="rate",
        target=Target("ratio", ">=", bound),
        generator_cpu=done.cpu_share,
        note=note,
    ).settle()


def export_http(ctx: Context) -> list[Figure]:
    """``export_all`` of the imported program over HTTP (curl to a file), in JSON and in XML; the server's RSS
    growth across both."""
    program, server = ctx.bulk_program, ctx.running
    if program is None:
        raise Failed("no imported program to export")
    baseline = _export_baseline(ctx, program)
    before = reset_peaks(server)
    figures = []
    for answer_format in ("json", "xml"):
        output = ctx.workdir / f"export.{answer_format}"
        body = msgspec.json.encode({"loyalty_id": program, "format": answer_format}).decode()
        limit = 120 + ctx.options.codes / 1000
        command = ["curl", "-sS", "--fail", "--max-time", str(int(limit)), "-o", str(output), "-d", body]
        command += ["-H", f"Authorization: Bearer {ctx.seed.token}", "-H", "Content-Type: application/json"]
        done = run_measured([*command, f"{server.base}{API}/export_all"], timeout=limit + 10)
        with output.open("rb") as file:
            head = file.read(64)
        if not head.startswith(b"{" if answer_format == "json" else b"<"):
            raise Failed(f"export_all in {answer_format} began {head!r}")
        note = f"{output.stat().st_size / 1e6:.0f} MB answer; gen. CPU is curl's"
        figures.append(_export_figure(f"export HTTP {answer_format}", ctx, done, baseline, 0.3, note))
    grew = growth(server, before)
    figures.append(
        Figure(
            "export HTTP RSS growth",
            ctx.adapter,
            grew,
            "MB",
            target=Target("value", "<=", 50),
            note=f"largest peak minus RSS before, per process, across both exports of {ctx.options.codes:,} codes",
        ).settle()
    )
    return figures


def generate(ctx: Context) -> list[Figure]:
    """``promocodes generate`` of ``--codes`` codes into a new program, against the import baseline."""
    count = min(ctx.options.codes, 1_000_000)  # the command's own bound
    program = create_program(ctx.url, ctx.seed.account_id, "generated")
    command = [*PROMOCODES, "generate", "--program", str(program), "--count", str(count), "--template", TEMPLATE]
    done = run_measured([*command, "--json", "--database-url", ctx.url], timeout=120 + count / 2000)
    made = _count(ctx, program)
    if made != count:
        raise Failed(f"promocodes generate made {made} of {count} codes")
    imported = ctx.figure(f"import CLI {ctx.options.codes:,}")
    baseline = None if imported is None else imported.baseline
    return [
        Figure(
            f"generate {count:,}",
            ctx.adapter,
            done.wall,
            "s",
            baseline,
            "s",
            "the import baseline",
            ratio_kind="time",
            generator_cpu=done.cpu_share,
            note=f"CLI peak RSS {done.peak_rss_mb:.0f} MB",
            extra={"cli_peak_rss_mb": done.peak_rss_mb},
        ).settle()
    ]
