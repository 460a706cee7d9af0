"""``promocodes serve`` started on a free port for the length of a ``with`` block, and its memory from /proc.

The server runs in a session of its own, so that stopping it (at the end of the block, on an error, on Ctrl-C)
stops its worker processes too: SIGTERM to the group, SIGKILL after a bounded wait.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from bench.load import Failed

PROMOCODES = [sys.executable, "-m", "promocodes"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env() -> dict[str, str]:
    """The environment without the caller's PROMOCODES_* settings, and with the lookup guard off: a load step may
    repeat codes past its slice, and the guard's 429s would measure the guard, not the server."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMOCODES_")}
    env["PROMOCODES_FAILED_LOOKUP_LIMIT"] = "0"
    env["PROMOCODES_FAILED_AUTH_LIMIT"] = "0"
    return env


class Server:
    """A running ``promocodes serve``: ``base`` is its URL, ``started_in`` the seconds from spawn to the first
    200 of ``/readyz`` (the probe that asks the database)."""

    def __init__(self, database_url: str, workers: int, ready_timeout: float = 60.0) -> None:
        self.database_url = database_url
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.started_in = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 — closed by stop()

    def __enter__(self) -> Server:
        command = [*PROMOCODES, "serve", "--port", str(self.port), "--workers", str(self.workers)]
        command += ["--database-url", self.database_url]
        # stderr to a file, read only when the server fails to start: a pipe nobody reads could fill and stall it.
        # stdout (the access log) is discarded: written as in production, read by nobody.
        started = time.perf_counter()
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._stderr, env=server_env(), start_new_session=True
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.ready_timeout
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                self._stderr.seek(0)
                stderr = self._stderr.read().decode(errors="replace")
                raise Failed(f"promocodes serve exited {self._process.returncode}: {stderr.strip()[-300:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        self.started_in = time.perf_counter() - started
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.005)
        raise Failed(f"promocodes serve was not ready within {self.ready_timeout:.0f} s")

    def stop(self) -> None:
        self._stderr.close()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the server itself with one worker; its worker children with more
        (uvicorn's supervisor serves nothing)."""
        if self.workers == 1:
            return [self.pid]
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def all_pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *(int(pid) for pid in children)]

    def rss_mb(self, pids: list[int] | None = None) -> float:
        """Resident memory now, summed over ``pids`` (default: every process of the server)."""
        return sum(_status_mb(pid, "VmRSS") for pid in pids or self.all_pids())

    def peak_rss_mb(self, pids: list[int] | None = None) -> float:
        """The high-water mark of resident memory since each process started, summed."""
        return sum(_status_mb(pid, "VmHWM") for pid in pids or self.all_pids())


def _status_mb(pid: int, field: str) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return 0.0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0
