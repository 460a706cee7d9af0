"""Data you can find: commands say where the database is, and only ``serve`` and ``migrate`` create one."""

from __future__ import annotations

from pathlib import Path

import pytest

from promocodes.config import Settings
from tests.cli.helpers import one_error_line, run, unused_port

# A command of each kind that only uses a database (reads, writes, imports, backs up).
USING_COMMANDS = [
    ["token", "list"],
    ["token", "create", "--account", "acme", "--role", "admin"],
    ["program", "create", "--name", "Spring"],
    ["program", "list"],
    ["program", "get", "1"],
    ["database", "list"],
    ["export", "--program", "1"],
    ["status"],
    ["backup", "--to", "copy.db"],
]


@pytest.mark.parametrize("args", USING_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_a_command_that_uses_the_database_refuses_to_create_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error_line(*run("sqlite:///elsewhere.db", *args))
    path = tmp_path / "elsewhere.db"
    assert f"No database at {path}" in line  # the absolute path it looked at
    assert f"promocodes migrate --database-url sqlite:///{path}" in line and "promocodes serve" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["migrate"], ["serve"], *USING_COMMANDS], ids=lambda args: " ".join(args[:2]))
def test_a_missing_folder_is_an_error_for_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    from promocodes.http import server

    monkeypatch.setattr(server, "run", lambda *args: None)
    monkeypatch.chdir(tmp_path)
    if args == ["serve"]:
        args = ["serve", "--port", str(unused_port())]
    line = one_error_line(*run("sqlite:///typo/promocodes.db", *args))
    assert f"No folder {tmp_path / 'typo'}" in line
    assert not (tmp_path / "typo").exists()


def test_migrate_creates_the_database_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("sqlite:///new.db", "migrate")
    assert code == 0, err
    assert f"SQLite database {tmp_path / 'new.db'}: applied 0001_initial" in out
    assert run("sqlite:///new.db", "status")[0] == 0  # and now the other commands use it


def test_serve_prints_the_absolute_path_of_the_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promocodes.http import server

    started: list[Settings] = []
    monkeypatch.setattr(server, "run", lambda settings, *args: started.append(settings))
    monkeypatch.chdir(tmp_path)
    code, out, err = run("sqlite:///data.db", "serve", "--port", str(unused_port()))
    assert code == 0, err
    assert f"(SQLite database {tmp_path / 'data.db'})" in out
    assert (tmp_path / "data.db").is_file() and started
