"""``/metrics``: the Prometheus text format, counting requests, latency, codes imported/attached/activated and the
database's load — and, under ``serve --workers 2``, the sum over both workers whichever worker is scraped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from promocodes.http import metrics
from promocodes.http.server import METRICS_DIR_VARIABLE, metrics_directory
from tests.conftest import Api
from tests.live import create_token, free_port, server_environment, stop, wait_until_healthy

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (the parser refuses text that is not the exposition format)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_counts_requests_and_codes(api: Api) -> None:
    loyalty_id = api.program()
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    scrape = api.client.get("/metrics")  # no token needed
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    before = parse(scrape.text)
    api.codes(loyalty_id, "SPRING-1", "SPRING-2", "SPRING-3")
    api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="SPRING-1")
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="SPRING-1")["error"] == 409
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="NOPE")["error"] == 404
    after = parse(api.client.get("/metrics").text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    activate = "promocodes/activate"
    assert grew("promocodes_requests_total", method=activate, error="0") == 1
    assert grew("promocodes_requests_total", method=activate, error="409") == 1
    assert grew("promocodes_requests_total", method=activate, error="404") == 1
    assert grew("promocodes_requests_total", method="promocodes/import", error="0") == 1
    assert grew("promocodes_request_duration_seconds_count", method=activate) == 3
    assert grew("promocodes_request_duration_seconds_bucket", method=activate, le="+Inf") == 3
    assert grew("promocodes_codes_imported_total") == 3
    assert grew("promocodes_codes_attached_total") == 1
    assert grew("promocodes_codes_activated_total") == 1  # the refused activations do not count
    queues = {labels for name, labels in after if name == "promocodes_db_operations_waiting"}
    expected = {"read", "write"} if api.database_url.startswith("sqlite") else {"connection"}
    assert {(("queue", queue),) for queue in expected} <= queues  # (other tests' stores share this process)


def test_unknown_paths_share_one_label(api: Api) -> None:
    for path in ("/a", "/b", "/api/v1.1/promocodes/nothing"):
        assert api.client.post(path, json={}).status_code == 404
    samples = parse(api.client.get("/metrics").text)
    labels = {dict(labels)["method"] for name, labels in samples if name == "promocodes_requests_total"}
    assert "other" in labels and not labels & {"/a", "/b", "promocodes/nothing"}


def test_the_gauges_of_a_dead_worker_are_forgotten(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead = int(finished.stdout)
    for pid in (dead, os.getpid()):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")  # a dead worker's counts still count
    metrics.forget_dead_workers(str(tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"gauge_livesum_{os.getpid()}.db"]
    )


def test_the_metrics_directory_is_made_and_removed_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(METRICS_DIR_VARIABLE, raising=False)
    with metrics_directory() as made:
        assert os.environ[METRICS_DIR_VARIABLE] == made and Path(made).is_dir()
    assert not Path(made).exists() and METRICS_DIR_VARIABLE not in os.environ
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_12345.db").write_bytes(b"")  # left by a previous run: its counts must not come back
    (given / "README").write_text("kept")
    monkeypatch.setenv(METRICS_DIR_VARIABLE, str(given))
    with metrics_directory() as used:
        assert used == str(given)
        assert [path.name for path in given.iterdir()] == ["README"]
    assert given.is_dir()


SERVE = [sys.executable, "-m", "promocodes", "serve"]
REQUESTS = 40


@contextlib.contextmanager
def serving(tmp_path: Path, workers: int) -> Iterator[tuple[str, str, Path]]:
    """``promocodes serve --workers N`` on SQLite, its temporary files under ``tmp_path/tmp``: base URL, admin
    token, and the file holding its output."""
    database_url = f"sqlite:///{tmp_path}/promocodes.db"
    token = create_token(database_url)
    port = free_port()
    log_path = tmp_path / "server.log"
    (tmp_path / "tmp").mkdir()
    environment = {**server_environment(), "TMPDIR": str(tmp_path / "tmp")}
    environment.pop(METRICS_DIR_VARIABLE, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SERVE, "--port", str(port), "--database-url", database_url, "--workers", str(workers)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, base_url, log_path)
            yield base_url, token, log_path
        finally:
            stop(process)


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    with serving(tmp_path, 2) as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_removes_its_metrics_directory_when_stopped(tmp_path: Path, workers: int) -> None:
    with serving(tmp_path, workers):
        [directory] = (tmp_path / "tmp").glob("promocodes-metrics-*")
        assert any(directory.glob("*.db"))  # the workers' figures
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_workers_answer_with_the_sum_of_both(two_workers: tuple[str, str, Path]) -> None:
    base_url, token, log_path = two_workers

    async def drive() -> list[float]:
        # No kept-alive connections: each request is accepted anew, by whichever worker takes it.
        limits = httpx2.Limits(max_connections=8, max_keepalive_connections=0)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=60, trust_env=False) as client:
            answers = await asyncio.gather(
                *(client.post("/api/v1.1/promocodes/programs/list", json={}, headers=headers) for _ in range(REQUESTS))
            )
            assert all(answer.json()["error"] == 0 for answer in answers)
            scrapes = [await client.get("/metrics") for _ in range(6)]
        return [
            value(parse(scrape.text), "promocodes_requests_total", method="promocodes/programs/list", error="0")
            for scrape in scrapes
        ]

    assert asyncio.run(drive()) == [REQUESTS] * 6
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    listed = [line for line in lines if line["path"] == "/api/v1.1/promocodes/programs/list"]
    assert len(listed) == REQUESTS and len({line["request_id"] for line in listed}) == REQUESTS
