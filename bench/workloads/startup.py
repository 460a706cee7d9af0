"""Start-up and idle memory: ``promocodes serve`` on the run's (migrated) database at 1 and 4 workers — the
seconds from spawn to the first 200 of ``/readyz``, then the RSS of each worker once the server idles."""

from __future__ import annotations

import time

from bench.report import Figure, Target
from bench.server import Server
from bench.workloads.context import Context


def settled_rss(server: Server, limit: float = 30.0) -> list[float]:
    """Each worker's RSS once the server idles: the first answer comes from the first worker ready, and the others
    may still be importing, so wait (at most ``limit`` seconds) until every worker is there and no worker's RSS
    moved by more than 1 MB over the last second."""
    deadline = time.monotonic() + limit
    last: list[float] = []
    while True:
        time.sleep(1.0)
        now = [server.rss_mb([pid]) for pid in server.worker_pids()]
        steady = len(now) == server.workers and len(last) == len(now)
        if (steady and all(abs(a - b) <= 1.0 for a, b in zip(now, last, strict=True))) or time.monotonic() > deadline:
            return now
        last = now


def startup(ctx: Context) -> list[Figure]:
    figures = []
    for workers in ctx.options.startup_workers:
        with Server(ctx.url, workers) as server:
            started = server.started_in
            per_worker = settled_rss(server)
        figures.append(
            Figure(
                f"start to first answer w{workers}",
                ctx.adapter,
                started,
                "s",
                target=Target("value", "<=", 1.0),
                note="spawn to the first 200 of /readyz, migrated database",
            ).settle()
        )
        figures.append(
            Figure(
                f"idle RSS per worker w{workers}",
                ctx.adapter,
                max(per_worker, default=0.0),
                "MB",
                target=Target("value", "<=", 60),
                note=f"largest of {len(per_worker)} worker(s): " + ", ".join(f"{rss:.0f}" for rss in per_worker),
            ).settle()
        )
    return figures
