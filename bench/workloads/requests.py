"""Request workloads against the running server, each next to the database running the server's own statement:
activate (1, 16, 64 connections, a distinct attached code per request), pool attach (a distinct profile per
request, then a SQL check that no code was handed out twice), get, and the latency at half of get's maximum."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from bench import baselines, statements
from bench.database import code_name, execute
from bench.load import Failed, Throughput, hey, wrk
from bench.report import Figure, Target
from bench.workloads.context import Context
from promocodes.domain.times import to_micros, utcnow

API = "/api/v1.1/promocodes"
#: the seeded code numbered ``:n`` (database.code_name), as a pgbench expression
CODE_KEY = "'R' || lpad((:n)::text, 9, '0')"


def _now_micros() -> int:
    return to_micros(utcnow())


def _per_step(ctx: Context) -> int:
    return ctx.seed.attached_codes // steps_using_codes(ctx.adapter, ctx.options.activate_connections)


def steps_using_codes(adapter: str, connections: tuple[int, ...]) -> int:
    """How many steps redeem codes: the HTTP steps, and pgbench's at each concurrency (SQLite: one loop)."""
    return len(connections) + (len(connections) if adapter == "postgres" else 1)


def _code_body(program: int) -> str:
    return '{"loyalty_id":%d,"code":"R%%09d"}' % program  # noqa: UP031 — a Lua format string inside


def _activated(ctx: Context) -> int:
    return int(
        execute(
            ctx.url,
            "SELECT count(*) FROM code_bindings b JOIN codes c ON c.id = b.code_id "
            "WHERE c.program_id = $1 AND b.activated IS NOT NULL",
            ctx.seed.redeem_program,
        )[0][0]
    )


def _activation(program: int, first: int, now: int) -> Callable[[int], tuple[int, str, int, None]]:
    """The arguments of the i-th redemption of the SQLite loop: its own code, no profile."""
    return lambda i: (program, code_name(first + i), now, None)


def _reading(program: int, account: int, count: int) -> Callable[[int], tuple[int, int, str, str]]:
    """The arguments of the i-th read of the SQLite loop: program, account, the code and its case-folded key."""
    return lambda i: (program, account, code_name(1 + i % count), code_name(1 + i % count).casefold())


def activate(ctx: Context) -> list[Figure]:
    """Every request redeems a different attached code; the baseline is the redemption's conditional UPDATE."""
    sql = statements.find(statements.ACTIVATE, ctx.adapter)
    program, seconds, per_step = ctx.seed.redeem_program, ctx.options.seconds, _per_step(ctx)
    figures = []
    sqlite_rate = None
    for connections in ctx.options.activate_connections:
        first = ctx.take_codes(per_step)
        before = _activated(ctx)
        url = ctx.running.base + f"{API}/activate"
        load = wrk(url, ctx.seed.token, _code_body(program), first, per_step, connections, seconds)
        redeemed = _activated(ctx) - before
        if ctx.adapter == "postgres":
            first = ctx.take_codes(per_step)
            rate = _baseline(
                baselines.pgbench,
                ctx.url,
                sql,
                {1: ":program", 2: CODE_KEY, 3: ":now", 4: "NULL"},
                connections,
                seconds,
                {"program": program, "now": _now_micros(), "first": first, "count": per_step},
                functools.partial(_activated, ctx),
            )
            baseline_name = f"pgbench, the UPDATE, {connections} clients"
        else:
            if sqlite_rate is None:
                first = ctx.take_codes(per_step)
                sqlite_rate = baselines.sqlite_loop(
                    ctx.url, sql, _activation(program, first, _now_micros()), seconds, True, per_step
                )
            rate = sqlite_rate
            baseline_name = "sqlite3 loop, the UPDATE, 1 connection"
        target = None
        if ctx.adapter == "sqlite":
            target = Target("ratio", ">=", 0.6)
        elif connections == max(ctx.options.activate_connections):
            target = Target("ratio", ">=", 0.7)
        extra = {"redeemed": redeemed}
        note = _notes(load, redeemed, rate, connections)
        figures.append(_versus(f"activate c{connections}", ctx, load, rate, baseline_name, target, note, extra))
    return figures


def _baseline(run: Callable[..., baselines.Rate], *args: Any) -> baselines.Rate | Failed:
    """A baseline's rate, or its failure: the HTTP figure is reported either way, with the failure in its note
    (pgbench can be refused a connection when PostgreSQL's max_connections is taken by other clients)."""
    try:
        return run(*args)
    except Failed as error:
        return error


def _versus(
    workload: str,
    ctx: Context,
    load: Throughput,
    rate: baselines.Rate | Failed,
    baseline_name: str,
    target: Target | None,
    note: str,
    extra: dict[str, int] | None = None,
) -> Figure:
    """A closed-loop HTTP step next to its statement's baseline: requests/s over statements/s."""
    return Figure(
        workload,
        ctx.adapter,
        load.rate,
        "req/s",
        rate.rate if isinstance(rate, baselines.Rate) else None,
        "stmt/s",
        baseline_name,
        ratio_kind="rate",
        target=target,
        generator_cpu=load.generator_cpu,
        note=note,
        extra={
            "p50_ms": load.p50_ms,
            "p99_ms": load.p99_ms,
            "baseline_done": rate.done if isinstance(rate, baselines.Rate) else None,
            **(extra or {}),
        },
    ).settle()


def _notes(load: Throughput, changed: int | None, rate: baselines.Rate | Failed, connections: int = 0) -> str:
    """What a reader must know to trust a step: refusals, socket errors, a baseline that matched too little."""
    notes = [f"p99 {load.p99_ms:.1f} ms"]
    if load.refused:
        notes.append(f"{load.refused} refused")
    if load.errors:
        notes.append(f"{load.errors} socket errors")
    # Requests still in flight when wrk stops are done by the server but not counted by wrk: up to one per
    # connection. Fewer changes than successes, or more than that margin, would be a fault worth seeing.
    if changed is not None and not load.ok <= changed <= load.ok + connections:
        notes.append(f"DB changed {changed} rows for {load.ok} ok")
    if isinstance(rate, Failed):
        notes.append(f"baseline FAILED: {rate}")
        return "; ".join(notes)
    if rate.matched < rate.done:
        notes.append(f"baseline matched {rate.matched}/{rate.done}")
    if rate.generator_cpu is not None:
        notes.append(f"pgbench CPU {rate.generator_cpu:.0%}")
    return "; ".join(notes)


def get(ctx: Context) -> list[Figure]:
    """Reads of distinct attached codes; the baseline is get's one statement (program and code together)."""
    sql = statements.find(statements.GET, ctx.adapter)
    program, seconds, connections = ctx.seed.redeem_program, ctx.options.seconds, ctx.options.connections
    count = ctx.seed.attached_codes
    load = wrk(ctx.running.base + f"{API}/get", ctx.seed.token, _code_body(program), 1, count, connections, seconds)
    if ctx.adapter == "postgres":
        rate = _baseline(
            baselines.pgbench,
            ctx.url,
            sql,
            {1: ":program", 2: ":account", 3: CODE_KEY, 4: f"lower({CODE_KEY})"},
            connections,
            seconds,
            {"program": program, "account": ctx.seed.account_id, "first": 1, "count": count},
            None,
        )
        name = f"pgbench, get's SELECT, {connections} clients"
    else:
        account = ctx.seed.account_id
        rate = baselines.sqlite_loop(ctx.url, sql, _reading(program, account, count), seconds, False, 10**9)
        name = "sqlite3 loop, get's SELECT, 1 connection"
    return [_versus(f"get c{connections}", ctx, load, rate, name, Target("ratio", ">=", 0.7), _notes(load, None, rate))]


def latency(ctx: Context) -> list[Figure]:
    """get at a steady offered load of half its measured maximum, open loop (hey -q): p50, p99, p99.9."""
    measured = ctx.figure(f"get c{ctx.options.connections}")
    if measured is None or not measured.value:
        return [Figure("latency get @ ½ max", ctx.adapter, None, "ms", note="no get maximum measured")]
    rate = measured.value / 2
    body = '{"loyalty_id":%d,"code":"%s"}' % (ctx.seed.redeem_program, code_name(1))  # noqa: UP031
    offered = hey(
        ctx.running.base + f"{API}/get",
        body,
        rate,
        ctx.options.seconds,
        {"Authorization": f"Bearer {ctx.seed.token}"},
    )
    note = f"p50 {offered.p50_ms:.1f} ms, p99.9 {offered.p999_ms:.1f} ms; offered {offered.offered:.0f}/s"
    note += f", answered {offered.achieved:.0f}/s"
    if not offered.held:
        note += " — hey did NOT hold the rate"
    if offered.non_200:
        note += f"; {offered.non_200} not 200"
    return [
        Figure(
            "latency get @ ½ max",
            ctx.adapter,
            offered.p99_ms,
            "ms p99",
            target=Target("value", "<=", 10),
            generator_cpu=offered.generator_cpu,
            note=note,
            extra={
                "p50_ms": offered.p50_ms,
                "p99_ms": offered.p99_ms,
                "p999_ms": offered.p999_ms,
                "offered": offered.offered,
                "achieved": offered.achieved,
                "held": offered.held,
            },
        ).settle()
    ]


def _claimed(ctx: Context, program: int) -> int:
    return int(
        execute(ctx.url, "SELECT count(*) FROM codes WHERE program_id = $1 AND attached_count > 0", program)[0][0]
    )


def handed_twice(url: str, program: int) -> int:
    """Codes of ``program`` bound more than once, or bound without their count saying so: 0 when the pool held."""
    return int(
        execute(
            url,
            "SELECT count(*) FROM (SELECT c.id FROM codes c JOIN code_bindings b ON b.code_id = c.id "
            "WHERE c.program_id = $1 GROUP BY c.id, c.attached_count "
            "HAVING count(*) > 1 OR count(*) <> c.attached_count) AS twice",
            program,
        )[0][0]
    )


def attach(ctx: Context) -> list[Figure]:
    """Pool attach (no code) for a distinct profile per request, on the program `promocodes import` filled; then
    the check that no code was handed out twice; the baseline is the pool's claiming UPDATE."""
    program = ctx.bulk_program
    if program is None:
        return [Figure("pool attach", ctx.adapter, None, "req/s", note="no bulk program (import failed)")]
    sql = statements.find(statements.CLAIM, ctx.adapter)
    seconds, connections = ctx.options.seconds, ctx.options.connections
    body = '{"loyalty_id":%d,"db_id":%d,"matching":"profile_id","profile_id":"%%024d"}' % (  # noqa: UP031
        program,
        ctx.seed.database_id,
    )
    before = _claimed(ctx, program)
    load = wrk(ctx.running.base + f"{API}/attach", ctx.seed.token, body, 1, ctx.seed.profiles, connections, seconds)
    claimed = _claimed(ctx, program) - before
    twice = handed_twice(ctx.url, program)
    if ctx.adapter == "postgres":
        rate = _baseline(
            baselines.pgbench,
            ctx.url,
            sql,
            {1: ":program", 2: ":now"},
            connections,
            seconds,
            {"program": program, "now": _now_micros(), "first": 1, "count": max(connections, 1)},
            functools.partial(_claimed, ctx, program),
        )
        name = f"pgbench, the claiming UPDATE, {connections} clients"
    else:
        now = _now_micros()
        rate = baselines.sqlite_loop(ctx.url, sql, lambda i: (program, now), seconds, True, 10**9)
        name = "sqlite3 loop, the claiming UPDATE, 1 connection"
    note = _notes(load, claimed, rate, connections)
    note += "; no code handed out twice" if twice == 0 else f"; {twice} CODES HANDED OUT TWICE"
    extra = {"handed_twice": twice, "claimed": claimed, "ok": load.ok}
    return [_versus(f"pool attach c{connections}", ctx, load, rate, name, Target("ratio", ">=", 0.6), note, extra)]


def codes_needed(adapter: str, connections: tuple[int, ...], seconds: float) -> int:
    """Attached codes to seed: each redeeming step gets a slice more than the fastest rate seen here could use."""
    return steps_using_codes(adapter, connections) * math.ceil(8000 * max(seconds, 1))


def profiles_needed(seconds: float) -> int:
    return math.ceil(4000 * max(seconds, 1))
