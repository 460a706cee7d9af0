"""The access log: one JSON line per request with its id, account, envelope error, status and duration — never a
token, and a code only as a short hash; the request id taken from ``X-Request-ID`` when acceptable and echoed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime
from typing import Any

import pytest

from promocodes.http.access_log import RequestIdFilter
from tests.conftest import Api

ACCESS = "promocodes.access"
FRESH_ID = re.compile(r"[0-9a-f]{16}")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == ACCESS]


def short_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def test_a_request_is_one_line_with_its_fields(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "SPRING-1")
    caplog.set_level(logging.INFO, logger=ACCESS)
    response = api.client.post(
        "/api/v1.1/promocodes/get",
        json={"loyalty_id": loyalty_id, "code": "SPRING-1"},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert response.json()["error"] == 0
    [line] = access_lines(caplog)
    assert set(line) == {
        "time",
        "request_id",
        "method",
        "path",
        "account",
        "error",
        "status",
        "duration_ms",
        "code_sha256",
    }
    assert line["time"].endswith("Z") and datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["path"]) == ("POST", "/api/v1.1/promocodes/get")
    assert isinstance(line["account"], int)
    assert (line["error"], line["status"]) == (0, 200)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["code_sha256"] == short_hash("SPRING-1")


def test_errors_are_logged_with_their_envelope_code(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    loyalty_id = api.program()
    caplog.set_level(logging.INFO, logger=ACCESS)
    missing = api.call("promocodes/get", loyalty_id=loyalty_id, code="NOPE")
    assert missing["error"] == 404
    no_token = api.client.post("/api/v1.1/promocodes/get", json={"loyalty_id": loyalty_id, "code": "NOPE"})
    assert no_token.json()["error"] == 401
    wrong_verb = api.client.get("/api/v1.1/promocodes/get")
    unknown = api.client.post("/api/v1.1/promocodes/nothing", json={})
    found, unauthenticated, not_allowed, not_a_route = access_lines(caplog)
    assert (found["error"], found["status"], found["code_sha256"]) == (404, 200, short_hash("NOPE"))
    assert isinstance(found["account"], int)
    assert (unauthenticated["error"], unauthenticated["account"]) == (401, None)
    assert (not_allowed["method"], not_allowed["error"], not_allowed["status"]) == ("GET", 405, 405)
    assert not_a_route["path"] == "/api/v1.1/promocodes/nothing"
    assert (not_a_route["error"], not_a_route["status"]) == (404, 404)
    assert wrong_verb.headers["X-Request-ID"] == not_allowed["request_id"]
    assert unknown.headers["X-Request-ID"] == not_a_route["request_id"]


def test_no_token_and_no_code_in_any_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "SECRET-CODE-1")
    caplog.set_level(logging.DEBUG, logger="promocodes")  # every level of the server's loggers
    body = {"loyalty_id": loyalty_id, "code": "SECRET-CODE-1"}
    get = "/api/v1.1/promocodes/get"
    bogus = "pc_" + "x" * 40
    answers = [
        api.client.post(get, json=body, headers={"Authorization": f"Bearer {api.token}"}),
        api.client.post(get, json={**body, "token": api.token}),
        api.client.post(f"{get}?token={api.token}", json=body),
        api.client.post(get, json=body, headers={"Authorization": f"Bearer {bogus}"}),
        api.client.post(get, json={**body, "token": bogus}),
        api.client.post(f"{get}?token={bogus}", json=body),
    ]
    assert [answer.json()["error"] for answer in answers] == [0, 0, 0, 401, 401, 401]
    assert len(access_lines(caplog)) == len(answers)
    # (the test client logs the URLs it requests, query string included: that is the client, not the server)
    server = [record for record in caplog.records if record.name.startswith("promocodes")]
    logged = "".join(f"{record.getMessage()} {record.__dict__}" for record in server)
    for secret in (api.token, bogus, "SECRET-CODE-1"):
        assert secret not in logged


def test_the_request_id_is_the_clients_when_acceptable_and_always_echoed(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    headers = {"Authorization": f"Bearer {api.token}"}
    programs = "/api/v1.1/promocodes/programs/list"
    given = api.client.post(programs, json={}, headers={**headers, "X-Request-ID": "lb-7f3a:42"})
    assert given.headers["X-Request-ID"] == "lb-7f3a:42"
    refused = ["has space", "x" * 129, "caf\u00e9".encode(), "tab\there", ""]
    answers = [api.client.post(programs, json={}, headers={**headers, "X-Request-ID": value}) for value in refused]
    none = api.client.post(programs, json={}, headers=headers)
    fresh = [answer.headers["X-Request-ID"] for answer in [*answers, none]]
    assert all(FRESH_ID.fullmatch(value) for value in fresh), fresh
    assert len(set(fresh)) == len(fresh)
    assert [line["request_id"] for line in access_lines(caplog)] == ["lb-7f3a:42", *fresh]
    assert all(answer.json()["error"] == 0 for answer in [given, *answers, none])


def test_a_streamed_answer_is_logged_once_it_is_sent(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A-1", "A-2")
    caplog.set_level(logging.INFO, logger=ACCESS)
    answer = api.call("promocodes/export_all", loyalty_id=loyalty_id)
    assert [item["code"] for item in answer["data"]] == ["A-1", "A-2"]
    [line] = access_lines(caplog)
    assert (line["path"], line["error"], line["status"]) == ("/api/v1.1/promocodes/export_all", 0, 200)


def test_probes_are_not_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.client.get(path).status_code == 200
    assert access_lines(caplog) == []


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_500_keeps_its_traceback_in_the_log_under_the_request_id(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.client.app.state.services.programs, "list", broken)  # type: ignore[attr-defined]
    caplog.set_level(logging.INFO, logger=ACCESS)
    handler = Collect()  # the server's stderr handler has this filter (promocodes.http.server.logging_config)
    logger = logging.getLogger("promocodes")
    logger.addHandler(handler)
    try:
        answer = api.client.post(
            "/api/v1.1/promocodes/programs/list",
            json={},
            headers={"Authorization": f"Bearer {api.token}", "X-Request-ID": "trace-me"},
        )
    finally:
        logger.removeHandler(handler)
    assert answer.status_code == 500 and answer.headers["X-Request-ID"] == "trace-me"
    assert "a bug" not in answer.text and "Traceback" not in answer.text
    [error] = [record for record in handler.records if record.levelno >= logging.ERROR]
    assert error.request_id == "trace-me"  # type: ignore[attr-defined]
    assert error.exc_info is not None and isinstance(error.exc_info[1], RuntimeError)
    [line] = access_lines(caplog)
    assert (line["request_id"], line["error"], line["status"]) == ("trace-me", 500, 500)
