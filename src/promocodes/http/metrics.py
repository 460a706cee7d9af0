"""Prometheus metrics at ``GET /metrics``, right under ``serve --workers N``.

Each uvicorn worker is a process of its own and a scrape reaches one of them. prometheus-client's multiprocess mode
makes any worker answer for all: every process keeps its values in memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape adds the files up. The client picks that mode when it is first imported,
so ``promocodes.http.server.run`` sets the variable before any worker starts (see there). Without it (tests, an app
built by hand) the values live in the process, as usual.

A worker that stops cleanly removes its gauge files (``mark_process_dead``). uvicorn gives no hook for a worker that
died (it restarts it), so each scrape also removes the gauge files of processes that no longer exist; the counters
of a dead worker stay in the sums, as Prometheus expects of counters.

The database gauges are sampled once a second by each worker, and by the scraped worker at the scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from promocodes.background import running
from promocodes.http.routes import PROMOCODES
from promocodes.schemas import ImportResult
from promocodes.store import Store

#: seconds between two samples of the database gauges in each worker
SAMPLE_SECONDS = 1.0
#: whether the client keeps its values in files shared by the workers (decided by the client at its import)
MULTIPROCESS = values.ValueClass is not values.MutexValue
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")

REQUESTS = Counter(
    "promocodes_requests",
    "Requests answered, by API method and the envelope's error code ('' for answers outside the envelope)",
    ["method", "error"],
)
LATENCY = Histogram(
    "promocodes_request_duration_seconds",
    "Time from a request's arrival to its answer's last byte, by API method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DB_IN_USE = Gauge(
    "promocodes_db_connections_in_use",
    "PostgreSQL pooled connections lent to an operation, summed over the workers",
    multiprocess_mode="livesum",
)
DB_WAITING = Gauge(
    "promocodes_db_operations_waiting",
    "Database operations waiting: for a PostgreSQL connection (queue=connection), or queued for the SQLite "
    "writer (queue=write) or readers (queue=read), summed over the workers",
    ["queue"],
    multiprocess_mode="livesum",
)
CODES_IMPORTED = Counter("promocodes_codes_imported", "Codes inserted by import (duplicates and refusals not counted)")
CODES_ATTACHED = Counter("promocodes_codes_attached", "Successful attach calls")
CODES_ACTIVATED = Counter("promocodes_codes_activated", "Successful activate calls")

_IMPORT, _ATTACH, _ACTIVATE = f"{PROMOCODES}/import", f"{PROMOCODES}/attach", f"{PROMOCODES}/activate"


@functools.cache
def _series(method: str, error: int | None) -> tuple[Counter, Histogram]:
    """The request counter and latency histogram of one label pair, looked up once: ``labels()`` takes a lock and
    builds a key on every call. The pairs are few (the methods and ``other``, times the error codes)."""
    return REQUESTS.labels(method, "" if error is None else str(error)), LATENCY.labels(method)


def observe(method: str, error: int | None, seconds: float) -> None:
    """One request answered (the access log's hook)."""
    requests, latency = _series(method, error)
    requests.inc()
    latency.observe(seconds)


def count_codes(path: str, result: Any) -> None:
    """After a successful service call: the codes it imported, attached or activated."""
    if path == _ACTIVATE:
        CODES_ACTIVATED.inc()
    elif path == _ATTACH:
        CODES_ATTACHED.inc()
    elif path == _IMPORT and isinstance(result, ImportResult):
        CODES_IMPORTED.inc(result.inserted)


def sample(store: Store) -> None:
    load = store.load()
    if load.in_use is not None:
        DB_IN_USE.set(load.in_use)
    for queue, count in load.waiting.items():
        DB_WAITING.labels(queue).set(count)


@contextlib.asynccontextmanager
async def sampling(store: Store) -> AsyncIterator[None]:
    """While the app runs: sample the store's load every ``SAMPLE_SECONDS``; at its end, take this process's
    gauges out of the sums."""

    async def loop() -> None:
        while True:
            sample(store)
            await asyncio.sleep(SAMPLE_SECONDS)

    try:
        async with running(loop):
            yield
    finally:
        if MULTIPROCESS:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def forget_dead_workers(directory: str) -> None:
    """Remove the gauge files of processes that no longer exist (a worker killed, then restarted by uvicorn)."""
    for path in Path(directory).iterdir():
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, under another user
            pass


def _exposition() -> bytes:
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    forget_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def endpoint(store: Store) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: the text format, no token needed (restrict it at the reverse proxy if it matters)."""

    async def metrics(request: Request) -> Response:
        sample(store)
        body = await run_in_threadpool(_exposition)  # reads a file per worker and metric type
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return metrics
