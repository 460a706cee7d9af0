"""Transport and envelope (docs/api.md#requests to #error-codes): body encodings, the response format, where the
token may travel, value conversion, the order of checks, the HTTP statuses, and that bad input changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from promocodes.config import Settings
from promocodes.http.app import create_app
from promocodes.models import Role
from promocodes.store import sqlite_path
from tests.client import InProcessClient
from tests.helpers import GET_KEYS, Api, issue_token
from tests.http.helpers import (
    bound_code,
    envelope,
    error_of,
    exported_codes,
    post,
    post_json,
    running,
    setup_program,
    snapshot,
    xml_root,
)
from tests.proxy import FreezingProxy

SUCCESS = "Successful operation"
FUTURE = "2999-01-01T00:00:00Z"
PAST = "2000-01-01T00:00:00Z"


# --- helpers ----------------------------------------------------------------------------------------------------------


# --- request encodings (docs/api.md#requests) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", '{{"loyalty_id": {lid}, "codes": ["A-1", "B-2"]}}'),
        ("application/json; charset=utf-8", '{{"codes": ["A-1", "B-2"], "loyalty_id": "{lid}"}}'),
        ("application/xml", "<xml><loyalty_id>{lid}</loyalty_id><codes>A-1</codes><codes>B-2</codes></xml>"),
        ("text/xml; charset=utf-8", "<xml><codes>A-1</codes><loyalty_id>{lid}</loyalty_id><codes>B-2</codes></xml>"),
        (
            "application/xml",
            '<?xml version="1.0" encoding="UTF-8"?>\n<xml>\n  <loyalty_id>{lid}</loyalty_id>\n'
            "  <codes>A-1</codes>\n  <codes>B-2</codes>\n</xml>\n",
        ),
        ("application/x-www-form-urlencoded", "loyalty_id={lid}&codes=A-1&codes=B-2"),
        ("application/x-www-form-urlencoded", "loyalty_id={lid}&codes%5B%5D=A-1&codes%5B%5D=B-2"),
    ],
    ids=["json", "json-charset", "xml", "text-xml-interleaved", "xml-declaration", "form", "form-php-arrays"],
)
def test_every_body_encoding_imports_an_array(api: Api, content_type: str, body: str) -> None:
    loyalty_id = setup_program(api)
    result = envelope(post(api, "promocodes/import", body.format(lid=loyalty_id), content_type=content_type))
    assert (result["error"], result["inserted"]) == (0, 2), result
    assert exported_codes(api, loyalty_id) == ["A-1", "B-2"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/xml", "<xml><loyalty_id>{lid}</loyalty_id><codes>ONLY</codes></xml>"),
        ("application/x-www-form-urlencoded", "loyalty_id={lid}&codes=ONLY"),
    ],
    ids=["xml", "form"],
)
def test_a_single_array_element_is_a_one_item_list(api: Api, content_type: str, body: str) -> None:
    loyalty_id = setup_program(api)
    result = envelope(post(api, "promocodes/import", body.format(lid=loyalty_id), content_type=content_type))
    assert result["data"] == [{"code": "ONLY", "error": 0, "error_text": ""}]
    assert exported_codes(api, loyalty_id) == ["ONLY"]


def test_a_json_string_is_not_taken_for_an_array(api: Api) -> None:
    loyalty_id = setup_program(api)
    error, text = error_of(post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": "ONLY"}))
    assert error == 400 and "codes" in text
    assert exported_codes(api, loyalty_id) == []


@pytest.mark.parametrize(
    "body",
    ['  \n{{"loyalty_id": {lid}, "code": "A-1"}}', "\n  <xml><loyalty_id>{lid}</loyalty_id><code>A-1</code></xml>"],
    ids=["json", "xml"],
)
def test_a_body_without_content_type_is_sniffed(api: Api, body: str) -> None:
    loyalty_id = setup_program(api, "A-1")
    response = post(api, "promocodes/get", body.format(lid=loyalty_id).encode())
    assert "content-type" not in response.request.headers
    result = envelope(response)
    assert (result["error"], result["data"]["code"]) == (0, "A-1"), result


def test_the_content_type_wins_over_sniffing(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    json_as_xml = post(
        api, "promocodes/get", json.dumps({"loyalty_id": loyalty_id, "code": "A-1"}), content_type="text/xml"
    )
    assert error_of(json_as_xml)[0] == 400
    xml_as_json = post(
        api,
        "promocodes/get",
        f"<xml><loyalty_id>{loyalty_id}</loyalty_id><code>A-1</code></xml>",
        content_type="application/json",
    )
    assert error_of(xml_as_json)[0] == 400


def test_xml_values_are_text_converted_to_numbers_and_booleans(api: Api) -> None:
    body = (
        "<xml><name>From XML</name><active>false</active><multiple_usage>true</multiple_usage>"
        "<case_sensitive>0</case_sensitive><one_code_per_profile>1</one_code_per_profile>"
        "<codes_limit>12</codes_limit></xml>"
    )
    created = envelope(post(api, "promocodes/programs/create", body, content_type="application/xml"))
    assert created["error"] == 0, created
    program = created["data"]
    assert (program["name"], program["active"], program["multiple_usage"]) == ("From XML", False, True)
    assert (program["case_sensitive"], program["one_code_per_profile"], program["codes_limit"]) == (False, True, 12)


# --- response format (docs/api.md#answer-format) ----------------------------------------------------------------------


def _get_body(loyalty_id: int, **extra: Any) -> str:
    return json.dumps({"loyalty_id": loyalty_id, "code": "A-1", **extra})


def test_format_in_the_body_selects_xml(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    root = xml_root(post(api, "promocodes/get", _get_body(loyalty_id, format="xml"), content_type="application/json"))
    assert root.findtext("data/code") == "A-1"


def test_format_in_the_query_selects_xml(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    response = post(api, "promocodes/get", _get_body(loyalty_id), content_type="application/json", query="?format=xml")
    assert xml_root(response).findtext("data/code") == "A-1"


def test_accept_header_selects_xml(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    response = post(
        api, "promocodes/get", _get_body(loyalty_id), content_type="application/json", Accept="application/xml"
    )
    assert xml_root(response).findtext("data/code") == "A-1"


@pytest.mark.parametrize("where", ["body", "query"])
def test_format_parameter_wins_over_accept(api: Api, where: str) -> None:
    loyalty_id = setup_program(api, "A-1")
    body = _get_body(loyalty_id, format="json") if where == "body" else _get_body(loyalty_id)
    query = "?format=json" if where == "query" else ""
    response = post(api, "promocodes/get", body, content_type="application/json", query=query, Accept="application/xml")
    assert envelope(response)["data"]["code"] == "A-1"


def test_an_xml_request_is_answered_in_json_by_default(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    body = f"<xml><loyalty_id>{loyalty_id}</loyalty_id><code>A-1</code></xml>"
    assert envelope(post(api, "promocodes/get", body, content_type="application/xml"))["data"]["code"] == "A-1"
    xml_format = f"<xml><format>xml</format><loyalty_id>{loyalty_id}</loyalty_id><code>A-1</code></xml>"
    root = xml_root(post(api, "promocodes/get", xml_format, content_type="application/xml"))
    assert root.findtext("data/code") == "A-1"


@pytest.mark.parametrize("where", ["body", "query"])
def test_an_unknown_format_is_error_400(api: Api, where: str) -> None:
    loyalty_id = setup_program(api, "A-1")
    body = _get_body(loyalty_id, format="yaml") if where == "body" else _get_body(loyalty_id)
    query = "?format=yaml" if where == "query" else ""
    error, text = error_of(post(api, "promocodes/get", body, content_type="application/json", query=query))
    assert error == 400 and "format" in text


# --- XML responses (docs/api.md#answer-format) ------------------------------------------------------------------------


def test_xml_get_of_a_free_code_matches_the_documented_shape(api: Api) -> None:
    loyalty_id = setup_program(api, "SPRING-003")
    created = api.ok("promocodes/get", loyalty_id=loyalty_id, code="SPRING-003")["created"]
    response = post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "SPRING-003", "format": "xml"})
    assert response.text == (
        "<xml><data><activated/><attached/><code>SPRING-003</code>"
        f"<created>{created}</created><expire_date/><expired/><is_activated>false</is_activated>"
        "<is_attached>false</is_attached><is_expired>false</is_expired>"
        f"<loyalty_id>{loyalty_id}</loyalty_id></data>"
        f"<error>0</error><error_text>{SUCCESS}</error_text></xml>"
    )


def test_xml_get_of_a_bound_code_is_alphabetical_with_true_booleans(api: Api) -> None:
    loyalty_id, db_id, profile_id = bound_code(api)
    data = xml_root(
        post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "BOUND-1", "format": "xml"})
    ).find("data")
    assert data is not None
    tags = [child.tag for child in data]
    assert tags == sorted(tags) == sorted(GET_KEYS)
    assert (data.findtext("is_attached"), data.findtext("is_activated")) == ("true", "false")
    assert (data.findtext("database_id"), data.findtext("profile_id")) == (str(db_id), profile_id)


def test_xml_empty_data_is_an_empty_element(api: Api) -> None:
    loyalty_id, _, _ = bound_code(api)
    response = post_json(api, "promocodes/activate", {"loyalty_id": loyalty_id, "code": "BOUND-1", "format": "xml"})
    assert response.text == f"<xml><data/><error>0</error><error_text>{SUCCESS}</error_text></xml>"
    failed = post_json(api, "promocodes/activate", {"loyalty_id": loyalty_id, "code": "BOUND-1", "format": "xml"})
    assert failed.text == "<xml><data/><error>409</error><error_text>Promo code already activated</error_text></xml>"


def test_xml_import_answer_carries_the_counters(api: Api) -> None:
    loyalty_id = setup_program(api, "SPRING-002")
    response = post_json(
        api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": ["SPRING-001", "SPRING-002"], "format": "xml"}
    )
    assert response.text == (
        "<xml><data><code>SPRING-001</code><error>0</error><error_text/></data>"
        "<data><code>SPRING-002</code><error>500</error><error_text>Promocode duplicated</error_text></data>"
        "<discarded_by_limit>0</discarded_by_limit><duplicated>1</duplicated><error>0</error>"
        f"<error_text>{SUCCESS}</error_text><inserted>1</inserted></xml>"
    )


def test_xml_export_repeats_data_and_omits_an_empty_array(api: Api) -> None:
    loyalty_id, _, _ = bound_code(api, "SPRING-002")
    api.codes(loyalty_id, "SPRING-001")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="SPRING-002")
    root = xml_root(post_json(api, "promocodes/export_all", {"loyalty_id": loyalty_id, "format": "xml"}))
    items = root.findall("data")
    assert [[child.tag for child in item] for item in items] == [["activated", "attached", "code"], ["code"]]
    assert [item.findtext("code") for item in items] == ["SPRING-002", "SPRING-001"]
    assert [child.tag for child in root] == ["data", "data", "error", "error_text"]

    empty = setup_program(api)
    response = post_json(api, "promocodes/export_all", {"loyalty_id": empty, "format": "xml"})
    assert response.text == f"<xml><error>0</error><error_text>{SUCCESS}</error_text></xml>"


def test_xml_answers_escape_markup_in_values(api: Api) -> None:
    code = 'A&B<C>"D"'
    loyalty_id = setup_program(api, code)
    root = xml_root(post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": code, "format": "xml"}))
    assert root.findtext("data/code") == code


def test_xml_answers_stay_well_formed_when_they_echo_a_control_character(api: Api) -> None:
    loyalty_id = setup_program(api)
    response = post_json(
        api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": ["BAD\u0000ONE", "BAD\u001bTWO"], "format": "xml"}
    )
    root = xml_root(response)
    assert [item.findtext("error") for item in root.findall("data")] == ["400", "400"]
    assert [item.findtext("code") for item in root.findall("data")] == ["BAD\ufffdONE", "BAD\ufffdTWO"]


# --- JSON key order (docs/api.md#answer-format) -----------------------------------------------------------------------


def test_json_get_keeps_the_documented_key_order(api: Api) -> None:
    loyalty_id, db_id, profile_id = bound_code(api)
    api.ok("promocodes/update", loyalty_id=loyalty_id, code="BOUND-1", expire_date=FUTURE)
    body = envelope(post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "BOUND-1"}))
    assert list(body) == ["data", "error", "error_text"]
    assert list(body["data"]) == GET_KEYS
    assert (body["data"]["database_id"], body["data"]["profile_id"]) == (db_id, profile_id)
    assert body["data"]["expire_date"] == FUTURE


def test_json_get_of_a_free_code_has_no_profile_keys(api: Api) -> None:
    loyalty_id = setup_program(api, "FREE-1")
    data = api.ok("promocodes/get", loyalty_id=loyalty_id, code="FREE-1")
    assert list(data) == GET_KEYS[:-2]
    assert (data["attached"], data["activated"], data["expired"], data["expire_date"]) == ("", "", "", "")


def test_json_import_envelope_order(api: Api) -> None:
    loyalty_id = setup_program(api)
    body = envelope(post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": ["X"]}))
    assert list(body) == ["data", "discarded_by_limit", "duplicated", "error", "error_text", "inserted"]
    assert list(body["data"][0]) == ["code", "error", "error_text"]


# --- where the token travels (docs/api.md#tokens) ---------------------------------------------------------------------


def test_token_in_the_json_body(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    response = post_json(
        api, "promocodes/get", {"token": api.token, "loyalty_id": loyalty_id, "code": "A-1"}, token=None
    )
    assert envelope(response)["error"] == 0


def test_token_in_the_xml_body(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    body = f"<xml><token>{api.token}</token><loyalty_id>{loyalty_id}</loyalty_id><code>A-1</code></xml>"
    assert envelope(post(api, "promocodes/get", body, content_type="application/xml", token=None))["error"] == 0


def test_token_in_a_form_body(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    body = f"token={api.token}&loyalty_id={loyalty_id}&code=A-1"
    response = post(api, "promocodes/get", body, content_type="application/x-www-form-urlencoded", token=None)
    assert envelope(response)["error"] == 0


def test_token_in_the_query_string(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    response = post_json(
        api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "A-1"}, token=None, query=f"?token={api.token}"
    )
    assert envelope(response)["error"] == 0


def test_token_in_the_bearer_header(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    assert envelope(post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "A-1"}))["error"] == 0
    without = post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "A-1"}, token=None)
    assert error_of(without)[0] == 401


# --- numbers and booleans (docs/api.md#values) ------------------------------------------------------------------------


def test_numbers_may_arrive_as_decimal_strings(api: Api) -> None:
    loyalty_id = setup_program(api, "A-1")
    assert api.ok("promocodes/get", loyalty_id=str(loyalty_id), code="A-1")["loyalty_id"] == loyalty_id
    program = api.ok("promocodes/programs/create", name="Limited", codes_limit="3")
    assert program["codes_limit"] == 3


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(True, True), (False, False), ("true", True), ("false", False), ("1", True), ("0", False)],
)
def test_booleans_may_arrive_as_strings(api: Api, sent: Any, expected: bool) -> None:
    program = api.ok("promocodes/programs/create", name="Flags", active=sent, multiple_usage=sent)
    assert (program["active"], program["multiple_usage"]) == (expected, expected)
    assert api.ok("promocodes/programs/get", loyalty_id=program["id"])["active"] is expected


@pytest.mark.parametrize("value", ["yes", "on", 2, "2", 1.5, None, "", [True]])
def test_any_other_boolean_is_error_400_naming_the_field(api: Api, value: Any) -> None:
    loyalty_id, _, _ = bound_code(api)
    before = snapshot(api, loyalty_id)
    body = api.call("promocodes/update", loyalty_id=loyalty_id, code="BOUND-1", activated=value)
    assert body["error"] == 400 and "`activated`" in body["error_text"], body
    assert snapshot(api, loyalty_id) == before


@pytest.mark.parametrize("value", ["abc", "1.5", 1.5, "", None, True, [1], {"id": 1}, 0, -3, 2**63, "9" * 30])
def test_any_other_number_is_error_400_naming_the_field(api: Api, value: Any) -> None:
    setup_program(api, "A-1")
    body = api.call("promocodes/get", loyalty_id=value, code="A-1")
    assert body["error"] == 400 and "`loyalty_id`" in body["error_text"], body


@pytest.mark.parametrize("value", ["many", -1, 2**63])
def test_a_bad_count_is_error_400_and_creates_nothing(api: Api, value: Any) -> None:
    body = api.call("promocodes/programs/create", name="Limited", codes_limit=value)
    assert body["error"] == 400 and "`codes_limit`" in body["error_text"], body
    assert api.ok("promocodes/programs/list") == []


# --- order of checks (docs/api.md#order-of-checks) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", '{"loyalty_id": 1,'), ("application/xml", "<xml><loyalty_id>1</loyalty_id>")],
    ids=["json", "xml"],
)
def test_an_unparseable_body_is_400_before_a_body_token_is_checked(api: Api, content_type: str, body: str) -> None:
    assert error_of(post(api, "promocodes/import", body, content_type=content_type, token=None))[0] == 400
    with_token = (
        body.replace("{", '{"token": "pc_unknown", ') if body.startswith("{") else f"<xml><token>x</token>{body}"
    )
    assert error_of(post(api, "promocodes/import", with_token, content_type=content_type, token=None))[0] == 400


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", '{"loyalty_id": 1,'), ("application/xml", "<xml><loyalty_id>1</loyalty_id>")],
    ids=["json", "xml"],
)
def test_a_bad_token_outside_the_body_is_401_whatever_the_body(api: Api, content_type: str, body: str) -> None:
    """A token in the header or the query string is checked before the body is read (docs/api.md#order-of-checks)."""
    assert error_of(post(api, "promocodes/import", body, content_type=content_type, token="pc_unknown"))[0] == 401
    answer = post(api, "promocodes/import", body, content_type=content_type, token=None, query="?token=pc_unknown")
    assert error_of(answer)[0] == 401


def test_a_missing_token_is_401_before_role_and_fields(api: Api) -> None:
    # No token, a method no one could be allowed without one, and fields that are wrong: still 401.
    assert error_of(post_json(api, "tokens/create", {"role": "superuser"}, token=None))[0] == 401


def test_the_role_is_403_before_the_fields(api: Api) -> None:
    reader = api.token_for(Role.READ)
    assert error_of(post_json(api, "promocodes/import", {"codes": "not a list"}, token=reader))[0] == 403


def test_the_fields_are_400_before_the_objects(api: Api) -> None:
    # Program 999 does not exist, but the missing code is reported first.
    assert error_of(post_json(api, "promocodes/get", {"loyalty_id": 999}))[0] == 400
    assert error_of(post_json(api, "promocodes/get", {"loyalty_id": 999, "code": "A-1"}))[0] == 404


def test_a_missing_object_is_404_before_its_state(api: Api) -> None:
    loyalty_id = setup_program(api, "FREE-1")  # a free code: activating it would be 409
    assert error_of(post_json(api, "promocodes/activate", {"loyalty_id": loyalty_id, "code": "NOPE"}))[0] == 404
    assert error_of(post_json(api, "promocodes/activate", {"loyalty_id": loyalty_id, "code": "FREE-1"}))[0] == 409


# --- HTTP statuses (docs/api.md#error-codes) --------------------------------------------------------------------------


def test_api_errors_travel_on_http_200(api: Api) -> None:
    loyalty_id = setup_program(api)
    assert error_of(post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "NOPE"}), 200)[0] == 404
    assert error_of(post_json(api, "promocodes/get", {"loyalty_id": "x"}), 200)[0] == 400
    assert error_of(post_json(api, "promocodes/get", {"loyalty_id": loyalty_id}, token=None), 200)[0] == 401


@pytest.mark.parametrize(
    "path", ["/api/v1.1/promocodes/nope", "/api/v1.1/promocodes", "/elsewhere", "/api/v1.1/promocodes/get/"]
)
def test_an_unknown_path_is_http_404_in_the_envelope(api: Api, path: str) -> None:
    response = api.client.post(path, json={"token": api.token})
    assert error_of(response, 404)[0] == 404
    as_xml = api.client.post(path, json={}, headers={"Accept": "application/xml"})
    assert xml_root(as_xml, 404).findtext("error") == "404"


@pytest.mark.parametrize("verb", ["GET", "PUT", "DELETE", "PATCH"])
def test_any_method_but_post_is_http_405_in_the_envelope(api: Api, verb: str) -> None:
    response = api.client.request(verb, "/api/v1.1/promocodes/get", headers={"Authorization": f"Bearer {api.token}"})
    assert error_of(response, 405)[0] == 405
    assert response.headers["allow"] == "POST"


def _import_body(loyalty_id: int, size: int) -> bytes:
    """An import of one code, padded with an ignored field to exactly ``size`` bytes."""
    unpadded = len(json.dumps({"loyalty_id": loyalty_id, "codes": ["A-1"], "padding": ""}))
    return json.dumps({"loyalty_id": loyalty_id, "codes": ["A-1"], "padding": "x" * (size - unpadded)}).encode()


def test_a_body_over_the_limit_is_http_413_and_imports_nothing(database_url: str) -> None:
    limit = 300
    with running(database_url, max_body_bytes=limit) as api:
        loyalty_id = setup_program(api)
        headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}

        declared = api.client.post(
            "/api/v1.1/promocodes/import", content=_import_body(loyalty_id, limit + 1), headers=headers
        )
        assert error_of(declared, 413)[0] == 413
        as_xml = api.client.post(
            "/api/v1.1/promocodes/import?format=xml", content=_import_body(loyalty_id, limit + 1), headers=headers
        )
        assert xml_root(as_xml, 413).findtext("error") == "413"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
            body = _import_body(loyalty_id, limit + 1)
            yield from (body[i : i + 64] for i in range(0, len(body), 64))

        streamed = api.client.post("/api/v1.1/promocodes/import", content=chunks(), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert error_of(streamed, 413)[0] == 413
        assert exported_codes(api, loyalty_id) == []

        at_limit = api.client.post(
            "/api/v1.1/promocodes/import", content=_import_body(loyalty_id, limit), headers=headers
        )
        assert envelope(at_limit)["inserted"] == 1


def test_rate_limit_is_http_429_per_token(database_url: str) -> None:
    with running(database_url, rate_limit=2) as api:
        other = api.token_for(Role.READ)
        statuses: list[int] = []
        for _ in range(50):  # two per second are allowed: a burst must hit the limit
            response = post_json(api, "promocodes/programs/list", {})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert error_of(response, 429)[0] == 429
                # The budget is per token: another token is still served right after.
                assert envelope(post_json(api, "promocodes/programs/list", {}, token=other))["error"] == 0
                break
        assert statuses[-1] == 429, statuses
        assert set(statuses[:2]) == {200}


def test_unreachable_storage_is_http_503(postgres_url: str) -> None:
    """PostgreSQL behind a connection that is cut while the server runs: every request is a 503 until it is back."""
    url = urlsplit(postgres_url)
    proxy = FreezingProxy(url.hostname or "127.0.0.1", url.port or 5432)
    via_proxy = proxy.url(postgres_url)
    token = issue_token(postgres_url, "default", Role.ADMIN)
    with InProcessClient(create_app(Settings(database_url=via_proxy), migrate=True)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1.1/promocodes/programs/list", json={}, headers=headers).json()["error"] == 0
        proxy.close()
        for _ in range(2):  # the broken connection, then a new one that is refused
            response = client.post("/api/v1.1/promocodes/programs/list", json={}, headers=headers)
            assert error_of(response, 503)[0] == 503


def _sabotage(database_url: str) -> None:
    """Make the database itself fail every insert of a code, with a message that must not reach the client."""
    path = sqlite_path(database_url)
    if path is not None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "CREATE TRIGGER sabotage BEFORE INSERT ON codes BEGIN SELECT RAISE(ABORT, 'secret-detail'); END"
            )
            conn.commit()
        return

    async def create() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'secret-detail'; END $$;"
                "CREATE TRIGGER sabotage BEFORE INSERT ON codes FOR EACH ROW EXECUTE FUNCTION sabotage()"
            )
        finally:
            await conn.close()

    asyncio.run(create())


@pytest.fixture
def unsabotage(database_url: str) -> Iterator[None]:
    yield
    if sqlite_path(database_url) is None:  # the PostgreSQL database is shared by the session

        async def drop() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute("DROP TRIGGER IF EXISTS sabotage ON codes; DROP FUNCTION IF EXISTS sabotage()")
            finally:
                await conn.close()

        asyncio.run(drop())


@pytest.mark.usefixtures("unsabotage")
def test_an_unexpected_fault_is_http_500_without_details(api: Api, database_url: str) -> None:
    loyalty_id = setup_program(api)
    _sabotage(database_url)
    response = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": ["A-1"]})
    assert error_of(response, 500) == (500, "Internal error")
    assert "secret-detail" not in response.text and "Traceback" not in response.text
    as_xml = post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, "codes": ["A-1"], "format": "xml"})
    assert xml_root(as_xml, 500).findtext("error") == "500"
    assert exported_codes(api, loyalty_id) == []


# --- bad input changes nothing (docs/api.md#limits-on-hostile-input) --------------------------------------------------

XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><loyalty_id>{lid}</loyalty_id><codes>&xxe;</codes><codes>NEW-1</codes></xml>"
)
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY lol "lol">'
    '<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><loyalty_id>{lid}</loyalty_id><codes>&lol3;</codes><codes>NEW-1</codes></xml>"
)
BAD_BODIES = {
    "json-truncated": ("application/json", '{{"loyalty_id": {lid}, "codes": ["NEW-1"]'),
    "json-array": ("application/json", '[{{"loyalty_id": {lid}, "codes": ["NEW-1"]}}]'),
    "json-not-utf8": ("application/json", b'{"loyalty_id": {lid}, "codes": ["NEW-\xff"]}'),
    "xml-unclosed": ("application/xml", "<xml><loyalty_id>{lid}</loyalty_id><codes>NEW-1</codes>"),
    "xml-wrong-root": ("application/xml", "<request><loyalty_id>{lid}</loyalty_id><codes>NEW-1</codes></request>"),
    "xml-xxe": ("application/xml", XXE),
    "xml-billion-laughs": ("application/xml", LAUGHS),
    "xml-plain-doctype": (
        "application/xml",
        "<!DOCTYPE xml><xml><loyalty_id>{lid}</loyalty_id><codes>NEW-1</codes></xml>",
    ),
    "sniffed-xxe": (None, XXE),
    "form-broken": ("application/x-www-form-urlencoded", "loyalty_id={lid}&&codes"),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_a_bad_body_is_400_and_changes_nothing(api: Api, name: str) -> None:
    content_type, template = BAD_BODIES[name]
    loyalty_id, _, _ = bound_code(api)
    before = snapshot(api, loyalty_id)
    if isinstance(template, bytes):
        body: str | bytes = template.replace(b"{lid}", str(loyalty_id).encode())
    else:
        body = template.format(lid=loyalty_id)
    response = post(api, "promocodes/import", body, content_type=content_type)
    assert error_of(response)[0] == 400
    assert "root:" not in response.text and "lollol" not in response.text
    assert snapshot(api, loyalty_id) == before


@pytest.mark.parametrize(
    "fields",
    [{"codes": [1, 2]}, {"codes": "NEW-1"}, {"codes": [["NEW-1"]]}, {"codes": None}, {"codes": []}],
    ids=["numbers", "string", "nested", "null", "empty"],
)
def test_wrongly_typed_codes_are_400_and_change_nothing(api: Api, fields: dict[str, Any]) -> None:
    loyalty_id, _, _ = bound_code(api)
    before = snapshot(api, loyalty_id)
    assert error_of(post_json(api, "promocodes/import", {"loyalty_id": loyalty_id, **fields}))[0] == 400
    assert snapshot(api, loyalty_id) == before


def test_a_failed_activate_leaves_the_code_as_it_was(api: Api) -> None:
    loyalty_id, db_id, _ = bound_code(api)
    api.codes(loyalty_id, "FREE-1")
    api.ok("promocodes/update", loyalty_id=loyalty_id, code="BOUND-1", expire_date=PAST)
    before = snapshot(api, loyalty_id)
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="FREE-1")["error"] == 409  # not attached
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="BOUND-1")["error"] == 409  # expired
    api.profile(db_id, "bob@example.org")
    wrong_profile = api.call(
        "promocodes/activate", loyalty_id=loyalty_id, code="BOUND-1", db_id=db_id, email="bob@example.org"
    )
    assert wrong_profile["error"] == 409
    assert snapshot(api, loyalty_id) == before


def test_a_failed_attach_leaves_the_code_as_it_was(api: Api) -> None:
    loyalty_id, db_id, _ = bound_code(api)
    api.profile(db_id, "bob@example.org")
    before = snapshot(api, loyalty_id)
    taken = api.call("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="bob@example.org", code="BOUND-1")
    assert taken["error"] == 409
    nobody = api.call("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="eve@example.org", code="NEW-1")
    assert nobody["error"] == 404  # no such profile: the unknown code is not created either
    assert snapshot(api, loyalty_id) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"activated": True, "expire_date": PAST},  # judged against the new expiry: expired, so neither applies
        {"activated": True, "expire_date": "not a date"},
        {"activated": "maybe", "expire_date": FUTURE},
        {"activated": True, "expire_date": FUTURE, "db_id": 999, "email": "ann@example.org"},
    ],
    ids=["expired-by-new-date", "bad-date", "bad-flag", "unknown-database"],
)
def test_a_failed_update_applies_nothing(api: Api, fields: dict[str, Any]) -> None:
    loyalty_id, _, _ = bound_code(api)
    before = snapshot(api, loyalty_id)
    assert api.call("promocodes/update", loyalty_id=loyalty_id, code="BOUND-1", **fields)["error"] != 0
    assert snapshot(api, loyalty_id) == before


def test_a_failed_detach_leaves_the_code_as_it_was(api: Api) -> None:
    loyalty_id, db_id, _ = bound_code(api)
    api.profile(db_id, "bob@example.org")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="BOUND-1")
    before = snapshot(api, loyalty_id)
    other = api.call("promocodes/detach", loyalty_id=loyalty_id, db_id=db_id, email="bob@example.org", code="BOUND-1")
    assert other["error"] == 409
    redeemed = api.call(
        "promocodes/detach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code="BOUND-1"
    )
    assert redeemed["error"] == 409
    assert snapshot(api, loyalty_id) == before


def test_every_api_answer_forbids_caching_and_sniffing(api: Api) -> None:
    """Answers carry codes and profiles: no browser or proxy may keep them, nor read them as another type."""
    loyalty_id = setup_program(api, "A-1")
    answers = [
        post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "A-1"}),  # success
        post_json(api, "promocodes/get", {"loyalty_id": loyalty_id, "code": "NOPE"}),  # API error
        post_json(api, "promocodes/export_all", {"loyalty_id": loyalty_id}),  # streamed
        post_json(api, "promocodes/get", {}, token="pc_wrong"),  # refused before the body
        post_json(api, "promocodes/no_such_method", {}),  # unknown path
        api.client.get("/api/v1.1/promocodes/get"),  # wrong method
    ]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        assert "retry-after" not in answer.headers


def test_429_carries_retry_after(database_url: str) -> None:
    with running(database_url, rate_limit=1) as api:
        answers = [post_json(api, "promocodes/programs/list", {}) for _ in range(5)]
        limited = [answer for answer in answers if answer.status_code == 429]
        assert limited, [answer.status_code for answer in answers]
        assert all(int(answer.headers["retry-after"]) >= 1 for answer in limited)
