"""The parts of the benchmark harness a wrong figure would come from: the statements the baselines run are the
server's own, the check that the pool never handed a code out twice finds a code handed out twice, the
percentiles, and the one-line install hint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.workloads.requests import handed_twice

from bench import database, load, statements

HOT = [statements.ACTIVATE, statements.CLAIM, statements.GET]


@pytest.mark.parametrize("adapter", ["postgres", "sqlite"])
@pytest.mark.parametrize("hot", HOT, ids=lambda hot: hot.name)
def test_each_hot_statement_is_read_from_the_store(hot: statements.Hot, adapter: str) -> None:
    """Fails when store/codes.py no longer holds the statement: the baseline must then be pointed at the new one."""
    found = statements.find(hot, adapter)
    assert found.startswith(hot.starts)
    assert "$1" in found


def test_the_claim_carries_the_adapters_own_lock_clause() -> None:
    assert statements.find(statements.CLAIM, "postgres").count("FOR UPDATE SKIP LOCKED") == 1
    assert "SKIP LOCKED" not in statements.find(statements.CLAIM, "sqlite")


def test_a_statement_missing_from_the_source_is_an_error_not_a_stand_in() -> None:
    source = 'async def _activate(conn):\n    await conn.fetchrow("SELECT 1")\n'
    with pytest.raises(LookupError, match="activate"):
        statements.find(statements.ACTIVATE, "sqlite", source)


def test_substitute_tells_ten_from_one() -> None:
    assert statements.substitute("$1 $10 $2", {1: "a", 2: "b", 10: "j"}) == "a j b"
    assert statements.to_sqlite("x = $1 AND y = $12") == "x = ?1 AND y = ?12"


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[str, int]]:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    seed = database.seed(url, 3, 2)
    yield url, seed.redeem_program


def test_handed_twice_finds_a_second_binding_of_one_code(seeded: tuple[str, int]) -> None:
    url, program = seeded
    assert handed_twice(url, program) == 0
    database.execute(
        url,
        "INSERT INTO code_bindings (code_id, profile_pk, attached) "
        "SELECT min(id), (SELECT max(id) FROM profiles), 1 FROM codes WHERE program_id = $1",
        program,
    )
    assert handed_twice(url, program) == 1


def test_handed_twice_finds_a_binding_the_count_does_not_show(seeded: tuple[str, int]) -> None:
    url, program = seeded
    database.execute(url, "UPDATE codes SET attached_count = 0 WHERE code = $1", database.code_name(2))
    assert handed_twice(url, program) == 1


def test_the_seed_binds_every_code_once(seeded: tuple[str, int]) -> None:
    url, program = seeded
    rows = database.execute(
        url,
        "SELECT c.code, count(b.id) FROM codes c LEFT JOIN code_bindings b ON b.code_id = c.id "
        "WHERE c.program_id = $1 GROUP BY c.code ORDER BY c.code",
        program,
    )
    assert rows == [(database.code_name(n), 1) for n in (1, 2, 3)]


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 1001)]
    assert load._percentile(ordered, 50) == 500.0
    assert load._percentile(ordered, 99) == 990.0
    assert load._percentile(ordered, 99.9) == 999.0
    assert load._percentile([7.0], 99.9) == 7.0


def test_a_missing_tool_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load.shutil, "which", lambda tool: None if tool in {"wrk", "pgbench"} else "/usr/bin/x")
    assert load.missing(["hey", "curl"]) is None
    line = load.missing(["wrk", "hey", "pgbench"])
    assert line == "bench needs wrk, pgbench: apt-get install postgresql-client wrk"


def test_a_workload_past_its_time_limit_is_interrupted() -> None:
    from bench.__main__ import TimedOut, time_limit

    with pytest.raises(TimedOut), time_limit(0.2):
        load.run_measured(["sleep", "30"], timeout=60)


def test_a_child_past_its_timeout_is_killed_and_reported() -> None:
    with pytest.raises(load.Failed, match="ran out"):
        load.run_measured(["sleep", "30"], timeout=0.3)


def test_a_measured_child_reports_its_own_cpu_and_memory() -> None:
    done = load.run_measured(["python3", "-c", "bytearray(50_000_000); sum(range(3_000_000))"], timeout=60)
    assert done.returncode == 0
    assert done.peak_rss_mb >= 50
    assert done.cpu > 0
