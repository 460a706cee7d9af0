"""``/healthz`` answers while the process serves; ``/readyz`` only while the database answers a read in time (else
503 with ``Retry-After``). Neither needs a token."""

from __future__ import annotations

import pytest

from promocodes.config import Settings
from promocodes.http.app import create_app
from tests.client import InProcessClient
from tests.conftest import Api
from tests.proxy import FreezingProxy

TIMEOUT = 0.5  # the database timeout here: short, so that the 503 comes quickly


def test_health_and_readiness_answer_without_a_token(api: Api) -> None:
    health = api.client.get("/healthz")
    assert (health.status_code, health.json()) == (
        200,
        {"data": {"status": "ok"}, "error": 0, "error_text": "Successful operation"},
    )
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["data"] == {"status": "ready"} and ready.json()["error"] == 0


@pytest.mark.timeout(60)
def test_readiness_is_503_while_postgres_does_not_answer_and_health_stays_200(
    proxy: FreezingProxy, postgres_url: str
) -> None:
    app = create_app(Settings(database_url=proxy.url(postgres_url), db_timeout=TIMEOUT), migrate=True)
    with InProcessClient(app) as client:
        assert client.get("/readyz").status_code == 200
        proxy.freeze()
        frozen = client.get("/readyz")
        assert frozen.status_code == 503, frozen.text
        assert frozen.headers["Retry-After"] == "1"
        assert frozen.json() == {
            "data": None,
            "error": 503,
            "error_text": "The database did not answer in time; retry later",
        }
        assert client.get("/healthz").status_code == 200  # the process is alive: no restart wanted
        proxy.thaw()
        assert client.get("/readyz").status_code == 200
        proxy.close()  # now gone for good: the connections break, new ones are refused
        gone = client.get("/readyz")
        assert (gone.status_code, gone.json()["error"]) == (503, 503)
        assert gone.headers["Retry-After"] == "1"


@pytest.mark.timeout(60)
def test_readiness_is_503_on_a_database_without_the_schema(tmp_path: str) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/empty.db", db_timeout=TIMEOUT))  # not migrated
    with InProcessClient(app) as client:
        answer = client.get("/readyz")
    assert (answer.status_code, answer.json()["error"]) == (503, 503)
    assert answer.headers["Retry-After"] == "1"
