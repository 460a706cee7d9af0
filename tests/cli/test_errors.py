"""Every failure a user can run into is one plain line: what went wrong, and never a password or a traceback."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.cli.helpers import one_error_line, run, run_json, unused_port

PASSWORD = "s3cret-pw"


def with_password(postgres_url: str, **parts: str) -> str:
    """The session's PostgreSQL URL with a password (the local server trusts it, so it reaches the server) and
    the given parts replaced: ``user``, ``port``, ``database``."""
    split = urlsplit(postgres_url)
    user = parts.get("user", split.username or "postgres")
    port = parts.get("port", str(split.port or 5432))
    database = parts.get("database", split.path.lstrip("/"))
    return f"postgresql://{user}:{PASSWORD}@{split.hostname}:{port}/{database}"


def test_a_postgresql_database_that_does_not_exist(postgres_url: str) -> None:
    name = f"missing_{uuid.uuid4().hex[:12]}"
    line = one_error_line(*run(with_password(postgres_url, database=name), "status"))
    assert f'database "{name}" does not exist' in line
    assert f"createdb {name}" in line and "promocodes migrate" in line
    assert PASSWORD not in line and ":***@" in line


def test_a_postgresql_role_that_does_not_exist(postgres_url: str) -> None:
    role = f"nobody_{uuid.uuid4().hex[:12]}"
    line = one_error_line(*run(with_password(postgres_url, user=role), "program", "list"))
    assert f'PostgreSQL at 127.0.0.1:{urlsplit(postgres_url).port}: role "{role}" does not exist' in line
    assert PASSWORD not in line


def test_a_postgresql_server_that_refuses_the_connection(postgres_url: str) -> None:
    port = unused_port()
    line = one_error_line(*run(with_password(postgres_url, port=str(port)), "token", "list"))
    assert f"PostgreSQL at 127.0.0.1:{port} refused the connection" in line
    assert PASSWORD not in line


def test_an_import_file_that_is_not_utf8_names_the_file_and_line(database_url: str, tmp_path: Path) -> None:
    program = str(run_json(database_url, "program", "create", "--name", "Spring")["id"])
    source = tmp_path / "latin1.csv"
    source.write_bytes("code\nCAFE-1\nCAF\u00c9-2\n".encode("latin-1"))
    line = one_error_line(*run(database_url, "import", "--program", program, str(source)))
    assert f"{source}: line 3 is not UTF-8 (byte 0xc9 at column 4)" in line
    _, listed, _ = run(database_url, "export", "--program", program)
    assert listed.splitlines() == ["code,attached,activated"]  # refused before anything was imported


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_on_a_port_out_of_range(tmp_path: Path, port: str) -> None:
    line = one_error_line(*run(f"sqlite:///{tmp_path}/p.db", "serve", "--port", port))
    assert f"Port {port} is out of range: use a port from 1 to 65535" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["programs", "list"], "Error: No such command 'programs'. Did you mean 'program'?"),
        (["program", "get"], "Error: Missing argument 'program'."),
        (
            ["program", "get", "one"],
            "Error: Invalid value for 'program': Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_a_mistyped_command_is_the_usage_and_one_plain_error_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = run(f"sqlite:///{tmp_path}/p.db", *args)
    assert code == 2
    assert err.strip().splitlines()[-1] == message  # after the usage lines, not inside a box
    assert "╭" not in err and "│" not in err


def test_program_create_in_an_account_without_a_name(database_url: str) -> None:
    line = one_error_line(*run(database_url, "program", "create", "--name", "Spring", "--account", " "))
    assert line == "Error: Account name must not be empty"
    _, listed, _ = run(database_url, "program", "list", "--account", "", "--json")
    assert "Spring" not in listed
