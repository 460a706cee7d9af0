"""Running the command line in-process, for the tests of ``tests/cli``."""

from __future__ import annotations

import json
import socket
from typing import Any

from typer.testing import CliRunner

from promocodes.cli.main import app

runner = CliRunner()


def run(database_url: str, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``promocodes ARGS --database-url URL``."""
    result = runner.invoke(app, [*args, "--database-url", database_url])
    return result.exit_code, result.stdout, result.stderr


def run_json(database_url: str, *args: str) -> Any:
    """The one JSON document a command prints with ``--json`` (the command must succeed)."""
    code, out, err = run(database_url, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def one_error_line(code: int, out: str, err: str) -> str:
    """The error line of a failed command, after checking it is the only thing printed and no traceback."""
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Unexpected" not in lines[0]  # the catch-all for bugs: a failure a user can cause must be explained
    return lines[0]


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once by the system, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port
