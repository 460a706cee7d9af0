"""A real ``promocodes serve`` for the tests that need one: started in its own process group, waited for, stopped
with every worker it started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

PYTHON = sys.executable
STARTUP_SECONDS = 60.0
REQUEST_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment() -> dict[str, str]:
    """The test's environment without any PROMOCODES_* setting (no rate limit, no stray database URL), and with
    kept-alive connections held longer than the client keeps them: on a loaded machine the client may read an
    answer seconds after it was sent, and must never reuse a connection the server is closing at that moment.
    The database timeout is long too: these tests are about correctness under contention, and on a loaded machine
    hundreds of queued operations may wait longer than the default 5 s (a 503 there is the timeout working)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PROMOCODES_")}
    return {**environment, "PROMOCODES_KEEP_ALIVE_TIMEOUT": "60", "PROMOCODES_DB_TIMEOUT": "60"}


def create_token(database_url: str) -> str:
    # `token create` uses a database and never creates one: `migrate` does.
    migrated = subprocess.run(
        [PYTHON, "-m", "promocodes", "migrate", "--database-url", database_url],
        env=server_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "promocodes",
            "token",
            "create",
            "--account",
            "default",
            "--role",
            "admin",
            "--json",
            "--database-url",
            database_url,
        ],
        env=server_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    token: str = json.loads(done.stdout)["token"]
    return token


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group (the supervisor and its workers), by the group we started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx2.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                if client.get(f"{base_url}/healthz").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(f"the server did not answer /healthz in {STARTUP_SECONDS}s:\n{log_path.read_text(errors='replace')}")


class LiveServer:
    """A running server and an admin token of account ``default``."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            # Idle connections are dropped by the client well before the server closes them (5 s), so a request never
            # goes out on a connection the server is closing at that moment.
            limits=httpx2.Limits(max_connections=300, max_keepalive_connections=300, keepalive_expiry=1.0),
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
        )


@contextlib.contextmanager
def serving(
    database_url: str, log_path: Path, workers: int, environment: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """``promocodes serve --workers N`` on the database (migrated first, as `serve` would), with an admin token of
    account ``default``; its output goes to ``log_path``; ``environment`` adds settings (``PROMOCODES_*``). Stopped
    with every worker on leaving."""
    token = create_token(database_url)
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "promocodes",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--database-url",
                database_url,
                "--workers",
                str(workers),
            ],
            env={**server_environment(), **(environment or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that stop() reaches the workers too
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, base_url, log_path)
            yield LiveServer(base_url, token)
        finally:
            stop(process)
