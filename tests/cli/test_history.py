"""``promocodes history`` (docs/api.md#history): a code's events from the command line, which acts under the token
name "command line"; on both adapters."""

from __future__ import annotations

import asyncio
from pathlib import Path

from promocodes.domain.times import utcnow
from promocodes.models import COMMAND_LINE, Actor
from promocodes.store import open_store
from tests.cli.helpers import one_error_line, run, run_json

SHOP = Actor(token_id=None, token_name="shop")


def program_with_codes(database_url: str, tmp_path: Path, codes: list[str], *flags: str) -> str:
    program = str(run_json(database_url, "program", "create", "--name", "Spring", *flags)["id"])
    source = tmp_path / "codes.txt"
    source.write_text("".join(f"{code}\n" for code in codes), encoding="utf-8")
    assert run(database_url, "import", "--program", program, str(source))[0] == 0
    return program


def expiry_changes(database_url: str, program: str, code: str, count: int) -> None:
    """``count`` expiry changes of one code, made through the store (the command line has no `update`)."""

    async def change() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            for day in range(1, count + 1):
                moment = utcnow().replace(year=2030, month=1, day=day)
                await store.update_code(int(program), code, None, moment, True, None, utcnow(), actor=SHOP)
        finally:
            await store.close()

    asyncio.run(change())


def test_history_shows_the_command_line_as_the_actor(database_url: str, tmp_path: Path) -> None:
    program = program_with_codes(database_url, tmp_path, ["A", "B"])
    (created,) = run_json(database_url, "history", "--program", program, "A")
    assert (created["event"], created["token_name"], created["details"]) == (
        "created",
        COMMAND_LINE,
        {"source": "import", "count": 2},
    )
    assert (created["profile_id"], created["database_id"]) == ("", None)

    code, out, _ = run(database_url, "history", "--program", program, "B")
    assert code == 0
    assert "created" in out and COMMAND_LINE in out and "count: 2" in out


def test_history_pages_with_limit_and_after(database_url: str, tmp_path: Path) -> None:
    program = program_with_codes(database_url, tmp_path, ["A"])
    expiry_changes(database_url, program, "A", 4)

    everything = run_json(database_url, "history", "--program", program, "A")
    assert [event["event"] for event in everything] == ["created"] + ["expiry_changed"] * 4
    assert everything[2]["token_name"] == "shop"
    page = run_json(
        database_url, "history", "--program", program, "A", "--limit", "2", "--after", str(everything[0]["id"])
    )
    assert page == everything[1:3]

    code, _, err = run(database_url, "history", "--program", program, "A", "--limit", "2")
    assert code == 0 and f"--after {everything[1]['id']}" in err  # says how to get the next page


def test_history_finds_the_code_as_the_program_compares_codes(database_url: str, tmp_path: Path) -> None:
    program = program_with_codes(database_url, tmp_path, ["Spring-1"], "--no-case-sensitive")
    assert [event["event"] for event in run_json(database_url, "history", "--program", program, "SPRING-1")] == [
        "created"
    ]


def test_history_of_an_unknown_code_or_program_is_one_error_line(database_url: str, tmp_path: Path) -> None:
    program = program_with_codes(database_url, tmp_path, ["A"])
    assert "not found" in one_error_line(*run(database_url, "history", "--program", program, "NOPE"))
    assert "Program 999 not found" in one_error_line(*run(database_url, "history", "--program", "999", "A"))
