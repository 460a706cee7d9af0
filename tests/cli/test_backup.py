"""``promocodes backup``: a consistent copy of a SQLite database while other connections write to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from promocodes.cli import backup
from tests.cli.helpers import one_error_line, run, run_json


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        value: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return value


@pytest.mark.timeout(120)
def test_backup_while_another_connection_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between every two steps of the copy, another connection commits a row: the copy still finishes (SQLite
    does not restart it), opens, passes an integrity check, and holds exactly the rows committed before it began."""
    source, copy = tmp_path / "live.db", tmp_path / "copy.db"
    url = f"sqlite:///{source}"
    assert run(url, "migrate")[0] == 0
    program = run_json(url, "program", "create", "--name", "Spring")["id"]
    codes = tmp_path / "codes.txt"
    codes.write_text("\n".join(f"CODE-{n:05}" for n in range(5000)), encoding="utf-8")
    assert run(url, "import", "--program", str(program), str(codes))[0] == 0
    accounts_before = count(source, "accounts")

    writer = sqlite3.connect(source, isolation_level=None)
    writer.execute("PRAGMA busy_timeout = 10000")
    writes: list[int] = []

    class WritingProgress(backup.Progress):
        def update(self, task: Any, **fields: Any) -> None:
            writer.execute("INSERT INTO accounts (name, created) VALUES (?, 0)", (f"during-{len(writes)}",))
            writes.append(1)
            super().update(task, **fields)

    monkeypatch.setattr(backup, "Progress", WritingProgress)
    monkeypatch.setattr(backup, "PAGES_PER_STEP", 4)  # many steps, so many commits land in the middle of the copy
    try:
        code, out, err = run(url, "backup", "--to", str(copy))
    finally:
        writer.close()
    assert code == 0, err
    assert f"Backed up {source} to {copy}" in out
    assert len(writes) > 10

    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert count(copy, "codes") == 5000
    assert count(copy, "accounts") == accounts_before  # none of the rows written during the copy
    assert count(source, "accounts") == accounts_before + len(writes)
    assert run_json(f"sqlite:///{copy}", "program", "get", str(program))["stats"]["total"] == 5000


def test_backup_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    target = tmp_path / "copy.db"
    assert run(url, "migrate")[0] == 0
    target.write_text("an older backup")
    line = one_error_line(*run(url, "backup", "--to", str(target)))
    assert f"{target} already exists: pass --force to replace it" in line
    assert target.read_text() == "an older backup"

    code, _, err = run(url, "backup", "--to", str(target), "--force")
    assert code == 0, err
    assert count(target, "schema_migrations") >= 1
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_backup_of_postgresql_says_to_use_pg_dump(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    line = one_error_line(*run(url, "backup", "--to", str(tmp_path / "x.dump")))
    assert "for PostgreSQL use pg_dump" in line
    assert "s3cret-pw" not in line
    assert not (tmp_path / "x.dump").exists()
