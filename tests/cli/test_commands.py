"""Everything the management API does, done from the command line, on both adapters; ``--json`` output parsed."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import one_error_line, run, run_json


def test_program_create_get_update_delete(database_url: str) -> None:
    created = run_json(
        database_url, "program", "create", "--name", "Spring", "--codes-limit", "10", "--template", "S-####"
    )
    assert (created["name"], created["codes_limit"], created["template"]) == ("Spring", 10, "S-####")
    program = str(created["id"])

    shown = run_json(database_url, "program", "get", program)
    assert shown["id"] == created["id"] and shown["active"] is True
    assert shown["stats"] == {"total": 0, "free": 0, "attached": 0, "activated": 0, "expired": 0}

    updated = run_json(database_url, "program", "update", program, "--name", "Summer", "--inactive", "--no-codes-limit")
    assert (updated["name"], updated["active"], updated["codes_limit"], updated["template"]) == (
        "Summer",
        False,
        None,
        "S-####",  # not given: kept
    )
    assert run_json(database_url, "program", "get", program)["name"] == "Summer"

    code, out, _ = run(database_url, "program", "delete", program)
    assert code == 0 and f"Deleted program {program}" in out
    line = one_error_line(*run(database_url, "program", "get", program))
    assert f"Program {program} not found" in line


def test_program_list_json_holds_each_program_with_its_counts(database_url: str, tmp_path: Path) -> None:
    first = run_json(database_url, "program", "create", "--name", "One")["id"]
    second = run_json(database_url, "program", "create", "--name", "Two")["id"]
    source = tmp_path / "codes.txt"
    source.write_text("A\nB\n", encoding="utf-8")
    assert run(database_url, "import", "--program", str(second), str(source))[0] == 0

    listed = run_json(database_url, "program", "list")
    assert [(p["id"], p["stats"]["total"]) for p in listed] == [(first, 0), (second, 2)]


def test_program_update_goes_through_the_service_rules(database_url: str) -> None:
    program = str(run_json(database_url, "program", "create", "--name", "Spring")["id"])
    line = one_error_line(*run(database_url, "program", "update", program, "--generate-on-attach"))
    assert "needs a `template`" in line
    line = one_error_line(*run(database_url, "program", "update", program))
    assert "Nothing to update" in line


def test_databases_create_and_list(database_url: str) -> None:
    run(database_url, "token", "create", "--account", "acme", "--role", "admin")
    created = run_json(database_url, "database", "create", "--account", "acme", "--name", "customers")
    assert created["name"] == "customers"
    assert run_json(database_url, "database", "list", "--account", "acme") == [created]
    line = one_error_line(*run(database_url, "database", "list", "--account", "nobody"))
    assert "Account 'nobody' not found" in line


def test_token_list_and_revoke(database_url: str) -> None:
    created = run_json(database_url, "token", "create", "--account", "acme", "--role", "read", "--name", "bot")
    listed = run_json(database_url, "token", "list", "--account", "acme")
    assert listed == [
        {"id": created["id"], "name": "bot", "role": "read", "created": listed[0]["created"], "revoked": ""}
    ]
    assert "token" not in listed[0]  # only the hash is stored

    code, out, _ = run(database_url, "token", "revoke", str(created["id"]), "--account", "acme")
    assert code == 0 and f"Revoked token {created['id']}" in out
    assert run_json(database_url, "token", "list", "--account", "acme")[0]["revoked"] != ""
    line = one_error_line(*run(database_url, "token", "revoke", "999", "--account", "acme"))
    assert "Token 999 not found" in line


def test_status_shows_migrations_and_programs(database_url: str) -> None:
    run(database_url, "token", "create", "--account", "default", "--role", "admin")
    program = run_json(database_url, "program", "create", "--name", "Spring")["id"]
    report = run_json(database_url, "status")
    assert report["migrations_pending"] == [] and report["migrations_applied"]
    assert [p["id"] for p in report["programs"]] == [program]
    assert report["programs"][0]["stats"]["total"] == 0

    code, out, _ = run(database_url, "status")
    assert code == 0
    assert "Migrations pending: none" in out and "Spring" in out


def test_status_reports_pending_migrations_without_applying_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    (tmp_path / "old.db").touch()  # an existing file that was never migrated
    report = run_json(url, "status")
    assert report["migrations_applied"] == [] and report["migrations_pending"]
    assert report["database"] == str(tmp_path / "old.db")
    assert run_json(url, "status")["migrations_pending"] == report["migrations_pending"]


def test_webhooks_create_list_update_deliveries_delete(database_url: str) -> None:
    run_json(database_url, "token", "create", "--account", "acme", "--role", "admin")
    url = "https://shop.example/hooks"
    created = run_json(
        database_url, "webhooks", "create", url, "--event", "code.attached", "--event", "program.pool_low",
        "--account", "acme",
    )  # fmt: skip
    assert created["secret"].startswith("whsec_") and created["events"] == ["code.attached", "program.pool_low"]
    listed = run_json(database_url, "webhooks", "list", "--account", "acme")
    assert listed == [{key: value for key, value in created.items() if key != "secret"}]

    updated = run_json(
        database_url, "webhooks", "update", str(created["id"]), "--inactive", "--event", "code.detached",
        "--account", "acme",
    )  # fmt: skip
    assert (updated["active"], updated["events"], updated["url"]) == (False, ["code.detached"], url)
    assert run_json(database_url, "webhooks", "deliveries", str(created["id"]), "--account", "acme") == []

    bad = one_error_line(
        *run(database_url, "webhooks", "create", "ftp://x", "--event", "code.attached", "--account", "acme")
    )
    assert "`url`" in bad
    code, out, _ = run(database_url, "webhooks", "delete", str(created["id"]), "--account", "acme")
    assert code == 0 and f"Deleted webhook {created['id']}" in out
    assert "Webhook" in one_error_line(
        *run(database_url, "webhooks", "delete", str(created["id"]), "--account", "acme")
    )
