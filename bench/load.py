"""Load generators and measured child processes.

Every command the harness runs goes through :func:`run_measured`: its own CPU time and peak RSS come from
``os.wait4`` (the kernel's accounting of that one child), so each figure can show what the load generator or the
command line cost, next to the figure itself. Every run has a timeout; past it the child is killed.

``wrk`` (closed loop: N connections, each sending its next request when the last one is answered) drives the
throughput steps through ``bench/lua/sequence.lua``; ``hey`` (``-q``: a rate per worker) offers the steady load of
the latency step, and :func:`hey` checks from its per-request log that the rate was held.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"
#: the Debian package that brings each tool
PACKAGES = {"wrk": "wrk", "hey": "hey", "pgbench": "postgresql-client", "curl": "curl"}


def missing(tools: list[str]) -> str | None:
    """One line naming what to install when any of ``tools`` is missing, else None."""
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if not absent:
        return None
    packages = " ".join(sorted({PACKAGES[tool] for tool in absent}))
    return f"bench needs {', '.join(absent)}: apt-get install {packages}"


@dataclass
class Measured:
    """A finished child: its exit status, output, wall time, its own CPU seconds and peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float
    peak_rss_mb: float

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy the whole time)."""
        return self.cpu / self.wall if self.wall > 0 else 0.0


class Failed(RuntimeError):
    """A measured command failed or ran out of time: the workload reports it instead of a figure."""


def run_measured(command: list[str], timeout: float, env: dict[str, str] | None = None, check: bool = True) -> Measured:
    """Run ``command`` to its end (killed after ``timeout`` seconds) and measure it with ``os.wait4``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, **(env or {})}, start_new_session=True
        )
        timer = threading.Timer(timeout, _kill, (child.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:  # Ctrl-C or the workload's time limit: the child goes with us
            _kill(child.pid)
            child.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Measured(
            returncode=child.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,
        )
    if wall >= timeout:
        raise Failed(f"{command[0]} ran out of its {timeout:.0f} s")
    if check and result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise Failed(f"{command[0]} exited {result.returncode}: {last[0][:200]}")
    return result


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Throughput:
    """A closed-loop step: answered requests per second, how many were refused, latency, and wrk's CPU share."""

    rate: float
    ok: int
    refused: int
    errors: int
    p50_ms: float
    p99_ms: float
    generator_cpu: float


def wrk(url: str, token: str, body_format: str, first: int, count: int, connections: int, seconds: float) -> Throughput:
    """``connections`` connections for ``seconds`` (at least 1 s), each request's body ``body_format % n`` with a
    distinct ``n`` in ``[first, first + count)`` (wrk's threads take disjoint slices; past its slice a thread
    starts it again, and the repeats show as refused requests)."""
    threads = min(2, connections)
    env = {
        "BENCH_BODY": body_format,
        "BENCH_FIRST": str(first),
        "BENCH_COUNT": str(count),
        "BENCH_THREADS": str(threads),
        "BENCH_TOKEN": token,
    }
    duration = max(1, round(seconds))
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
    done = run_measured([*command, "-s", str(LUA / "sequence.lua"), url], timeout=duration + 30, env=env)
    rate = float(_field(r"Requests/sec:\s+([\d.]+)", done.stdout))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", done.stdout)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    summary = re.search(r"BENCH ok=(\d+) refused=(\d+) p50=([\d.]+) p99=([\d.]+)", done.stdout)
    if summary is None:
        raise Failed(f"wrk printed no summary: {done.stdout[-300:]!r}")
    ok, refused = int(summary.group(1)), int(summary.group(2))
    return Throughput(
        rate=rate * ok / max(1, ok + refused),  # only what succeeded counts
        ok=ok,
        refused=refused,
        errors=errors,
        p50_ms=float(summary.group(3)),
        p99_ms=float(summary.group(4)),
        generator_cpu=done.cpu_share,
    )


def _field(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise Failed(f"no {pattern!r} in the output: {text[-300:]!r}")
    return found.group(1)


@dataclass
class Latency:
    """An open-loop step: the rate offered and the rate held, latency percentiles, hey's CPU share."""

    offered: float
    achieved: float
    held: bool
    p50_ms: float
    p99_ms: float
    p999_ms: float
    non_200: int
    generator_cpu: float


def hey(url: str, body: str, rate: float, seconds: float, headers: dict[str, str]) -> Latency:
    """Offer ``rate`` requests per second for ``seconds`` with ``hey -q``: 16 workers, each held to ``rate/16``
    per second, so an answer slower than a worker's interval delays only that worker. The rate counts as held when
    the answered rate is within 10 % of the offered one."""
    workers = 16
    per_worker = max(rate / workers, 0.5)
    duration = max(1, round(seconds))
    command = ["hey", "-z", f"{duration}s", "-c", str(workers), "-q", f"{per_worker:.2f}", "-m", "POST", "-o", "csv"]
    command += ["-T", "application/json", "-d", body]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = run_measured([*command, url], timeout=duration + 30)
    times, statuses = [], []
    for row in csv.DictReader(io.StringIO(done.stdout)):
        times.append(float(row["response-time"]) * 1000)
        statuses.append(row["status-code"])
    if not times:
        raise Failed("hey answered no request")
    times.sort()
    achieved = len(times) / duration
    offered = per_worker * workers
    return Latency(
        offered=offered,
        achieved=achieved,
        held=achieved >= 0.9 * offered,
        p50_ms=_percentile(times, 50),
        p99_ms=_percentile(times, 99),
        p999_ms=_percentile(times, 99.9),
        non_200=sum(1 for status in statuses if status != "200"),
        generator_cpu=done.cpu_share,
    )


def _percentile(ordered: list[float], percent: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]
