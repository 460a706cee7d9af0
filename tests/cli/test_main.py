"""The command line, run in-process against both adapters."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import re
import socket
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from promocodes.cli.main import _prepare, app
from promocodes.config import Settings, env_name
from promocodes.service.auth import token_hash
from promocodes.store import open_store
from tests.cli.helpers import one_error_line, run, runner


def principal_exists(database_url: str, token: str) -> bool:
    async def check() -> bool:
        store = open_store(database_url)
        await store.open()
        try:
            return await store.principal_for(token_hash(token)) is not None
        finally:
            await store.close()

    return asyncio.run(check())


def new_program(database_url: str, *options: str) -> int:
    code, out, _ = run(database_url, "program", "create", "--name", "Spring", *options)
    assert code == 0, out
    return int(out.split()[2])  # "Created program <id> (...)"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["token"],
        ["token", "create"],
        ["token", "list"],
        ["program"],
        ["program", "create"],
        ["token", "revoke"],
        ["program", "list"],
        ["program", "get"],
        ["program", "update"],
        ["program", "delete"],
        ["database"],
        ["database", "create"],
        ["database", "list"],
        ["import"],
        ["export"],
        ["backup"],
        ["status"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_version_comes_from_the_package_metadata() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"promocodes {version('promocodes')}"


def test_token_list_help_does_not_claim_to_create_the_account() -> None:
    """It never did create one; the help said so."""
    result = runner.invoke(app, ["token", "list", "--help"])
    assert result.exit_code == 0
    assert "created when missing" not in result.stdout
    assert "must exist" in result.stdout


def test_token_create_json_prints_a_working_token(database_url: str) -> None:
    code, out, _ = run(database_url, "token", "create", "--account", "acme", "--role", "write", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["account"] == "acme" and payload["role"] == "write"
    assert payload["token"].startswith("pc_")
    assert principal_exists(database_url, payload["token"])


def test_migrate_twice_reports_up_to_date(database_url: str) -> None:
    run(database_url, "migrate")
    code, out, _ = run(database_url, "migrate")
    assert code == 0
    assert "up to date" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("code,campaign\nA1,x\nA2,y\nA1,z\n", "inserted 2, duplicated 1, discarded by limit 0, invalid 0"),
        ("A1\nA2\n\nA3\n", "inserted 3, duplicated 0, discarded by limit 0, invalid 0"),
        ("A1;ignored\n", "inserted 1, duplicated 0, discarded by limit 0, invalid 0"),
    ],
    ids=["csv-with-header", "one-per-line", "csv-first-column"],
)
def test_import_reports_counts(database_url: str, tmp_path: Path, content: str, expected: str) -> None:
    program = new_program(database_url)
    source = tmp_path / "codes.csv"
    source.write_text(content.replace(";", ","), encoding="utf-8")
    code, out, _ = run(database_url, "import", "--program", str(program), str(source))
    assert code == 0, out
    assert expected in out


def test_import_respects_the_program_limit_across_batches(database_url: str, tmp_path: Path) -> None:
    program = new_program(database_url, "--codes-limit", "5")
    source = tmp_path / "codes.txt"
    source.write_text("\n".join(f"C{n}" for n in range(12)), encoding="utf-8")
    code, out, _ = run(database_url, "import", "--program", str(program), "--batch-size", "4", str(source))
    assert code == 0
    assert "inserted 5, duplicated 0, discarded by limit 7" in out


def test_export_writes_csv_and_ndjson_in_creation_order(database_url: str, tmp_path: Path) -> None:
    program = new_program(database_url)
    source = tmp_path / "codes.txt"
    source.write_text("B\nA\nC\n", encoding="utf-8")
    run(database_url, "import", "--program", str(program), str(source))

    code, out, _ = run(database_url, "export", "--program", str(program))
    assert code == 0
    assert out.splitlines() == ["code,attached,activated", "B,,", "A,,", "C,,"]

    target = tmp_path / "out.ndjson"
    code, _, err = run(database_url, "export", "--program", str(program), "--format", "ndjson", "-o", str(target))
    assert code == 0
    assert "Exported 3 codes" in err
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"code": "B"},
        {"code": "A"},
        {"code": "C"},
    ]


def test_import_counts_each_kind_across_batches(database_url: str, tmp_path: Path) -> None:
    """Batches of 2 read ahead while the previous one is stored: the counts add up whatever falls in which batch."""
    program = new_program(database_url, "--codes-limit", "4")
    source = tmp_path / "codes.txt"
    lines = ["A", "B", "A", "C", "\u0007bell", "B", "D", "E", "F", "x" * 256, "C"]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run(database_url, "import", "--program", str(program), "--batch-size", "2", str(source))
    assert code == 0, err
    # A B | A C | bell B | D E | F long | C: A B C D stored, A B repeated, E F past the limit, and so is the last C:
    # once the program is full a batch is not looked at (docs/api.md#import), two invalid
    assert "inserted 4, duplicated 2, discarded by limit 3, invalid 2" in out
    code, out, _ = run(database_url, "export", "--program", str(program))
    assert out.splitlines()[1:] == ["A,,", "B,,", "C,,", "D,,"]


def test_export_quotes_what_csv_must_quote(database_url: str, tmp_path: Path) -> None:
    program = new_program(database_url)
    source = tmp_path / "codes.csv"
    source.write_text('code\n"A,1"\n"B ""quoted"""\nPLAIN\n', encoding="utf-8")
    assert run(database_url, "import", "--program", str(program), str(source))[0] == 0
    target = tmp_path / "out.csv"
    assert run(database_url, "export", "--program", str(program), "-o", str(target))[0] == 0
    with target.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["code", "attached", "activated"],
            ["A,1", "", ""],
            ['B "quoted"', "", ""],
            ["PLAIN", "", ""],
        ]
    assert target.read_bytes().endswith(b"PLAIN,,\r\n")


def test_generate_writes_exactly_the_new_codes_in_creation_order(database_url: str, tmp_path: Path) -> None:
    program = new_program(database_url, "--template", "GEN-@@-####")
    source = tmp_path / "codes.txt"
    source.write_text("OLD-1\n", encoding="utf-8")
    run(database_url, "import", "--program", str(program), str(source))
    target = tmp_path / "new.txt"

    code, out, err = run(database_url, "generate", "--program", str(program), "--count", "1500", "-o", str(target))

    assert code == 0, err
    assert f"generated 1500 codes from template GEN-@@-#### in program {program}, written to {target}" in out
    written = target.read_text(encoding="utf-8").splitlines()
    assert len(written) == len(set(written)) == 1500
    assert all(re.fullmatch("GEN-[A-Z]{2}-[0-9]{4}", line) for line in written)
    code, out, _ = run(database_url, "export", "--program", str(program))
    assert out.splitlines()[1:] == ["OLD-1,,", *[f"{line},," for line in written]]
    assert not list(tmp_path.glob("*.partial"))


def test_generate_with_a_template_of_its_own_and_json(database_url: str) -> None:
    program = new_program(database_url)
    code, out, err = run(
        database_url, "generate", "--program", str(program), "--count", "3", "--template", "[X]-?????", "--json"
    )
    assert code == 0, err
    assert json.loads(out) == {"generated": 3, "template": "[X]-?????"}


@pytest.mark.parametrize(
    ("settings", "count", "message"),
    [
        (["--template", "S-####"], "11", "a thousandth"),  # 10,000 codes: at most 10 of them
        (["--template", "S-########", "--codes-limit", "5"], "6", "codes_limit of 5"),
        ([], "1", "`template` is required"),
    ],
    ids=["guard", "limit", "no-template"],
)
def test_generate_refused_writes_no_file_and_no_code(
    database_url: str, tmp_path: Path, settings: list[str], count: str, message: str
) -> None:
    program = new_program(database_url, *settings)
    target = tmp_path / "new.txt"
    line = one_error_line(
        *run(database_url, "generate", "--program", str(program), "--count", count, "-o", str(target))
    )
    assert message in line
    assert not target.exists() and not list(tmp_path.glob("*.partial"))
    assert run(database_url, "export", "--program", str(program))[1].splitlines() == ["code,attached,activated"]


@pytest.mark.parametrize("count", ["0", "1000001"])
def test_generate_count_outside_its_range_is_a_usage_error(database_url: str, count: str) -> None:
    program = new_program(database_url, "--template", "S-########")
    assert run(database_url, "generate", "--program", str(program), "--count", count)[0] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "--program", "999", "codes.txt"], "Program 999 not found"),
        (["import", "--program", "1", "missing.txt"], "No such file"),
        (["export", "--program", "999"], "Program 999 not found"),
        (["export", "--program", "1", "--format", "xlsx"], "Unknown format"),
        (["program", "create", "--name", "x", "--short-name", "has space"], "must not contain spaces"),
        (["token", "list", "--account", "nobody"], "Account 'nobody' not found"),
    ],
)
def test_errors_are_one_line_without_traceback(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "codes.txt").write_text("A\n", encoding="utf-8")
    new_program(database_url)
    code, out, err = run(database_url, *args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_unsupported_database_url_is_one_clear_line() -> None:
    result = runner.invoke(app, ["migrate", "--database-url", "mysql://localhost/x"])
    assert result.exit_code == 1
    assert "Unsupported database URL" in result.stderr


def test_first_start_creates_one_admin_token(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    token = asyncio.run(_prepare(settings))
    assert token is not None and principal_exists(database_url, token)
    assert asyncio.run(_prepare(settings)) is None  # not on later starts: the first token is still there


def test_serve_on_a_busy_port_is_one_clear_line(database_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code, out, err = run(database_url, "serve", "--port", str(port))
    assert code == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in out + err


def test_serve_never_prints_the_database_password(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL here trusts local connections, so a URL with any password reaches it: the startup lines must
    show the URL with the password masked."""
    from promocodes.http import server

    started: list[Settings] = []
    monkeypatch.setattr(server, "run", lambda settings, *args: started.append(settings))
    with_password = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    assert "s3cret-pw" in with_password
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    code, out, err = run(with_password, "serve", "--port", str(port))
    assert code == 0, err
    assert "s3cret-pw" not in out + err
    assert "postgres:***@" in out
    assert started and started[0].database_url == with_password  # the server itself still gets the real URL


def _changed(settings: Settings) -> dict[str, Any]:
    """A value different from the default for every setting except the database URL (text: a suffix added)."""
    changed: dict[str, Any] = {}
    for setting in dataclasses.fields(Settings):
        default = getattr(settings, setting.name)
        if isinstance(default, str):
            if setting.name != "database_url":
                changed[setting.name] = default + "-changed"
        else:
            changed[setting.name] = default * 2 + 1 if isinstance(default, int) else default * 2 + 0.5
    return changed


def test_every_setting_reaches_the_workers_from_a_flag_or_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half the settings given as flags, half as PROMOCODES_* variables: `serve` reads them all, and a worker —
    which builds its app from the environment `serve` leaves it — sees every one of them."""
    from promocodes.http import server

    started: list[Settings] = []
    monkeypatch.setattr(server, "run", lambda settings, *args: started.append(settings))
    changed = _changed(Settings())
    flags: list[str] = []
    for index, (name, value) in enumerate(changed.items()):
        if index % 2:
            flags += [f"--{name.replace('_', '-')}", str(value)]
        else:
            monkeypatch.setenv(env_name(name), str(value))
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    monkeypatch.setattr("os.environ", dict(os.environ))  # what serve leaves for its workers, undone afterwards
    code, _, err = run(database_url, "serve", "--port", str(port), *flags)
    assert code == 0, err
    expected = Settings(database_url=database_url, **changed)
    assert started == [expected]
    assert Settings.from_env() == expected  # exactly what a worker process reads


def test_config_prints_the_settings_in_force_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOCODES_POOL_SIZE", "50")
    result = runner.invoke(
        app, ["config", "--json", "--db-timeout", "0.5", "--database-url", "postgresql://app:s3cret@db/promo"]
    )
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert set(shown) == {setting.name for setting in dataclasses.fields(Settings)}
    assert (shown["pool_size"], shown["db_timeout"], shown["database_url"]) == (
        50,
        0.5,
        "postgresql://app:***@db/promo",
    )
    assert "s3cret" not in runner.invoke(app, ["config", "--database-url", "postgresql://app:s3cret@db/p"]).stdout


def test_an_unsupported_database_url_is_shown_without_its_password() -> None:
    result = runner.invoke(app, ["migrate", "--database-url", "mysql://app:s3cret-pw@localhost/x"])
    assert result.exit_code == 1
    assert "mysql://app:***@localhost/x" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
