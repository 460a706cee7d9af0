"""Start-up and idle memory: ``promocodes serve`` on the run's (migrated) database at 1 and 4 workers — the
seconds from spawn to the first 200 of ``/readyz``, then, after a second of idling, the RSS of each worker."""

from __future__ import annotations

import time

from bench.report import Figure, Target
from bench.server import Server
from bench.workloads.context import Context


def startup(ctx: Context) -> list[Figure]:
    figures = []
    for workers in ctx.options.startup_workers:
        with Server(ctx.url, workers) as server:
            started = server.started_in
            time.sleep(1.0)  # idle: what a worker holds between requests
            per_worker = [server.rss_mb([pid]) for pid in server.worker_pids()]
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
