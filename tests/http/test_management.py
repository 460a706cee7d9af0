"""The management API (docs/api.md#management-methods): programs, databases, profiles and tokens over HTTP."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.helpers import Api

PAST = "2000-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00Z"
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
PROFILE_ID = re.compile(r"[0-9a-f]{24}")
DEFAULTS = {
    "short_name": "",
    "description": "",
    "active": True,
    "valid_from": "",
    "valid_to": "",
    "multiple_usage": False,
    "case_sensitive": True,
    "codes_limit": None,
    "create_on_attach": True,
    "template": None,
    "generate_on_attach": False,
    "one_code_per_profile": False,
    "pool_low_threshold": None,
}


def refused(api: Api, method: str, **fields: Any) -> tuple[int, str]:
    body = api.call(method, **fields)
    assert body["data"] is None, body
    return body["error"], body["error_text"]


def program_ids(api: Api) -> list[int]:
    return [program["id"] for program in api.ok("promocodes/programs/list")]


def stats(api: Api, loyalty_id: int) -> dict[str, int]:
    result: dict[str, int] = api.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]
    return result


def attach(api: Api, loyalty_id: int, db_id: int, email: str, code: str | None = None) -> str:
    fields: dict[str, Any] = {"code": code} if code is not None else {}
    attached: str = api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email=email, **fields)["code"]
    return attached


def get_code(api: Api, loyalty_id: int, code: str) -> dict[str, Any]:
    data: dict[str, Any] = api.ok("promocodes/get", loyalty_id=loyalty_id, code=code)
    return data


# --- programs/create -------------------------------------------------------------------------------------------


def test_create_needs_only_a_name_and_applies_the_defaults(api: Api) -> None:
    program = api.ok("promocodes/programs/create", name="Spring")
    assert isinstance(program["id"], int) and program["id"] >= 1
    assert program["name"] == "Spring"
    assert RFC3339.fullmatch(program["created"]), program
    assert {name: program[name] for name in DEFAULTS} == DEFAULTS
    assert "stats" not in program


def test_create_keeps_every_setting_given(api: Api) -> None:
    settings = {
        "name": "Summer",
        "short_name": "summer_sale",
        "description": "Codes for the summer",
        "active": False,
        "valid_from": "2025-06-01T00:00:00Z",
        "valid_to": "2025-08-31T23:59:59Z",
        "multiple_usage": True,
        "case_sensitive": False,
        "codes_limit": 500,
        "create_on_attach": False,
        "template": "SUM-####-@@",
        "generate_on_attach": True,
        "one_code_per_profile": True,
    }
    created = api.ok("promocodes/programs/create", **settings)
    assert {name: created[name] for name in settings} == settings
    fetched = api.ok("promocodes/programs/get", loyalty_id=created["id"])
    assert {name: fetched[name] for name in settings} == settings


def test_create_turns_any_offset_into_utc(api: Api) -> None:
    program = api.ok("promocodes/programs/create", name="Zoned", valid_from="2025-06-01T03:00:00+03:00")
    assert program["valid_from"] == "2025-06-01T00:00:00Z"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 7}, "name"),
        ({"name": "P", "short_name": "spring sale"}, "short_name"),
        ({"name": "P", "short_name": "spring\tsale"}, "short_name"),
        ({"name": "P", "generate_on_attach": True}, "generate_on_attach"),
        ({"name": "P", "template": "NO-PLACEHOLDER"}, "placeholder"),
        ({"name": "P", "template": "AB#\\"}, "escape"),
        ({"name": "P", "valid_from": "2025-06-02T00:00:00Z", "valid_to": "2025-06-01T00:00:00Z"}, "valid_from"),
        ({"name": "P", "valid_from": "2025-13-01T00:00:00Z"}, "valid_from"),
        ({"name": "P", "valid_to": "tomorrow"}, "valid_to"),
        ({"name": "P", "valid_to": "2025-06-01"}, "valid_to"),
        ({"name": "P", "valid_to": "2025-06-01T00:00:00"}, "valid_to"),
        ({"name": "P", "valid_to": "2025-06-01 00:00:00Z"}, "valid_to"),
        ({"name": "P", "codes_limit": -1}, "codes_limit"),
        ({"name": "P", "active": "maybe"}, "active"),
    ],
    ids=[
        "no-name",
        "empty-name",
        "blank-name",
        "number-name",
        "short-name-space",
        "short-name-tab",
        "generate-without-template",
        "template-without-placeholder",
        "template-lone-escape",
        "from-after-to",
        "bad-month",
        "not-a-date",
        "date-only",
        "no-offset",
        "space-separator",
        "negative-limit",
        "bad-boolean",
    ],
)
def test_create_refuses_invalid_settings_and_creates_nothing(api: Api, fields: dict[str, Any], field: str) -> None:
    error, text = refused(api, "promocodes/programs/create", **fields)
    assert error == 400 and field in text, text
    assert program_ids(api) == []


def test_create_allows_a_one_moment_range_and_underscores(api: Api) -> None:
    moment = "2025-06-01T00:00:00Z"
    program = api.ok(
        "promocodes/programs/create", name="P", short_name="spring_sale", valid_from=moment, valid_to=moment
    )
    assert (program["short_name"], program["valid_from"], program["valid_to"]) == ("spring_sale", moment, moment)


# --- programs/list and programs/get ----------------------------------------------------------------------------


def test_list_shows_every_program_of_the_account(api: Api) -> None:
    first = api.program(name="First")
    second = api.program(name="Second")
    listed = api.ok("promocodes/programs/list")
    assert [(p["id"], p["name"]) for p in listed] == [(first, "First"), (second, "Second")]
    assert all("stats" not in p for p in listed)


def test_get_unknown_program_is_404(api: Api) -> None:
    assert refused(api, "promocodes/programs/get", loyalty_id=4242) == (404, "Program 4242 not found")


def test_get_of_an_empty_program_has_zero_stats(api: Api) -> None:
    loyalty_id = api.program()
    assert stats(api, loyalty_id) == {"total": 0, "free": 0, "attached": 0, "activated": 0, "expired": 0}


def test_stats_overlap_as_a_user_reads_them(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "FREE", "FREE-LATER", "FREE-EXPIRED", "BOUND", "USED", "USED-EXPIRED")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    for code in ("BOUND", "USED", "USED-EXPIRED"):
        attach(api, loyalty_id, db_id, "ann@example.org", code)
    for code in ("USED", "USED-EXPIRED"):
        api.ok("promocodes/activate", loyalty_id=loyalty_id, code=code)
    for code, expiry in (("FREE-LATER", FUTURE), ("FREE-EXPIRED", PAST), ("USED-EXPIRED", PAST)):
        api.ok("promocodes/update", loyalty_id=loyalty_id, code=code, expire_date=expiry)
    assert stats(api, loyalty_id) == {
        "total": 6,
        "free": 2,  # FREE, FREE-LATER: bound to nobody and not expired
        "attached": 3,  # BOUND, USED, USED-EXPIRED: activated ones included
        "activated": 2,  # USED, USED-EXPIRED
        "expired": 2,  # FREE-EXPIRED, USED-EXPIRED: whatever their other state
    }


def test_stats_follow_detach_and_deactivation(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A", "B")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    attach(api, loyalty_id, db_id, "ann@example.org", "A")
    attach(api, loyalty_id, db_id, "ann@example.org", "B")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="B")
    assert stats(api, loyalty_id) == {"total": 2, "free": 0, "attached": 2, "activated": 1, "expired": 0}
    api.ok("promocodes/detach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code="A")
    api.ok("promocodes/update", loyalty_id=loyalty_id, code="B", activated=False)
    assert stats(api, loyalty_id) == {"total": 2, "free": 1, "attached": 1, "activated": 0, "expired": 0}


def test_pool_low_threshold_is_created_updated_read_back_and_cleared(api: Api) -> None:
    """The setting added by its declaration and a migration alone: every layer picks it up from there."""
    created = api.ok("promocodes/programs/create", name="Pool", pool_low_threshold=5)
    assert created["pool_low_threshold"] == 5
    assert refused(api, "promocodes/programs/update", loyalty_id=created["id"], pool_low_threshold=-1)[0] == 400
    updated = api.ok("promocodes/programs/update", loyalty_id=created["id"], pool_low_threshold="20")
    assert updated["pool_low_threshold"] == 20
    assert api.ok("promocodes/programs/get", loyalty_id=created["id"])["pool_low_threshold"] == 20
    cleared = api.ok("promocodes/programs/update", loyalty_id=created["id"], pool_low_threshold=None)
    assert cleared["pool_low_threshold"] is None
    assert api.ok("promocodes/programs/list")[0]["pool_low_threshold"] is None


# --- programs/update -------------------------------------------------------------------------------------------


def test_update_changes_the_given_settings_only(api: Api) -> None:
    created = api.ok("promocodes/programs/create", name="Spring", description="kept", codes_limit=10)
    updated = api.ok("promocodes/programs/update", loyalty_id=created["id"], name="Autumn", active=False)
    assert (updated["name"], updated["active"], updated["description"], updated["codes_limit"]) == (
        "Autumn",
        False,
        "kept",
        10,
    )
    assert api.ok("promocodes/programs/get", loyalty_id=created["id"])["name"] == "Autumn"


def test_update_clears_optional_settings_with_null(api: Api) -> None:
    created = api.ok("promocodes/programs/create", name="P", codes_limit=10, valid_to=FUTURE, template="A-###")
    updated = api.ok(
        "promocodes/programs/update", loyalty_id=created["id"], codes_limit=None, valid_to=None, template=None
    )
    assert (updated["codes_limit"], updated["valid_to"], updated["template"]) == (None, "", None)


def test_update_an_inactive_program_stops_activation(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    attach(api, loyalty_id, db_id, "ann@example.org", "A")
    api.ok("promocodes/programs/update", loyalty_id=loyalty_id, active=False)
    assert refused(api, "promocodes/activate", loyalty_id=loyalty_id, code="A")[0] == 409
    api.ok("promocodes/programs/update", loyalty_id=loyalty_id, active=True)
    assert api.ok("promocodes/activate", loyalty_id=loyalty_id, code="A") is None


def test_update_with_nothing_to_change_is_400(api: Api) -> None:
    loyalty_id = api.program(name="Spring")
    error, text = refused(api, "promocodes/programs/update", loyalty_id=loyalty_id)
    assert error == 400 and "Nothing to update" in text
    assert api.ok("promocodes/programs/get", loyalty_id=loyalty_id)["name"] == "Spring"


def test_update_of_an_unknown_program_is_404(api: Api) -> None:
    assert refused(api, "promocodes/programs/update", loyalty_id=4242, name="X") == (404, "Program 4242 not found")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"short_name": "with space"}, "short_name"),
        ({"name": ""}, "name"),
        ({"valid_to": "2025-01-01T00:00:00Z"}, "valid_from"),  # before the stored valid_from
        ({"template": None}, "generate_on_attach"),  # the stored generate_on_attach needs a template
        ({"valid_from": "soon"}, "valid_from"),
    ],
    ids=["short-name-space", "empty-name", "range-against-stored", "template-needed", "bad-date"],
)
def test_update_is_checked_as_a_whole_and_changes_nothing_when_refused(
    api: Api, fields: dict[str, Any], field: str
) -> None:
    created = api.ok(
        "promocodes/programs/create",
        name="Spring",
        valid_from="2025-06-01T00:00:00Z",
        template="S-####",
        generate_on_attach=True,
    )
    error, text = refused(api, "promocodes/programs/update", loyalty_id=created["id"], description="new", **fields)
    assert error == 400 and field in text, text
    assert api.ok("promocodes/programs/get", loyalty_id=created["id"]) == {
        **created,
        "stats": stats(api, created["id"]),
    }


# --- programs/delete -------------------------------------------------------------------------------------------


def _program_with_attached_code(api: Api) -> tuple[int, int]:
    loyalty_id = api.program()
    api.codes(loyalty_id, "FREE-1", "BOUND-1")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    attach(api, loyalty_id, db_id, "ann@example.org", "BOUND-1")
    return loyalty_id, db_id


def test_delete_is_409_while_codes_are_attached(api: Api) -> None:
    loyalty_id, _ = _program_with_attached_code(api)
    before = api.ok("promocodes/export_all", loyalty_id=loyalty_id)
    error, text = refused(api, "promocodes/programs/delete", loyalty_id=loyalty_id)
    assert error == 409 and "force" in text, text
    error, _ = refused(api, "promocodes/programs/delete", loyalty_id=loyalty_id, force=False)
    assert error == 409
    assert program_ids(api) == [loyalty_id]
    assert api.ok("promocodes/export_all", loyalty_id=loyalty_id) == before


def test_delete_with_force_removes_the_program_and_its_codes(api: Api) -> None:
    loyalty_id, db_id = _program_with_attached_code(api)
    assert api.ok("promocodes/programs/delete", loyalty_id=loyalty_id, force=True) is None
    assert program_ids(api) == []
    for method, fields in (
        ("promocodes/programs/get", {}),
        ("promocodes/export_all", {}),
        ("promocodes/get", {"code": "BOUND-1"}),
    ):
        assert refused(api, method, loyalty_id=loyalty_id, **fields) == (404, f"Program {loyalty_id} not found")
    # The profile no longer holds the code: it can be deleted without force.
    assert api.ok("profiles/delete", db_id=db_id, email="ann@example.org") is None


def test_delete_of_a_program_with_only_free_codes_needs_no_force(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "FREE-1")
    assert api.ok("promocodes/programs/delete", loyalty_id=loyalty_id) is None
    assert program_ids(api) == []


def test_delete_of_an_unknown_program_is_404(api: Api) -> None:
    assert refused(api, "promocodes/programs/delete", loyalty_id=4242, force=True) == (404, "Program 4242 not found")


# --- databases -------------------------------------------------------------------------------------------------


def test_databases_create_and_list(api: Api) -> None:
    first = api.ok("databases/create", name="customers")
    assert set(first) == {"id", "name"} and first["name"] == "customers"
    second = api.ok("databases/create", name="  partners  ")
    assert second["name"] == "partners"
    assert api.ok("databases/list") == [first, second]


@pytest.mark.parametrize("fields", [{}, {"name": ""}, {"name": "  "}, {"name": 3}])
def test_databases_create_needs_a_name(api: Api, fields: dict[str, Any]) -> None:
    error, text = refused(api, "databases/create", **fields)
    assert error == 400 and "name" in text, text
    assert api.ok("databases/list") == []


# --- profiles --------------------------------------------------------------------------------------------------


def test_profile_import_creates_then_updates_the_matching_one(api: Api) -> None:
    db_id = api.database()
    created = api.ok("profiles/import", db_id=db_id, email="ann@example.org", data={"city": "Oslo", "tier": 1})
    assert set(created) == {"profile_id"} and PROFILE_ID.fullmatch(created["profile_id"]), created
    again = api.ok(
        "profiles/import", db_id=db_id, email="ann@example.org", data={"city": "Bergen", "phones": ["+4712345678"]}
    )
    assert again == created
    profile = api.ok("profiles/get", db_id=db_id, email="ann@example.org")
    assert (profile["profile_id"], profile["db_id"]) == (created["profile_id"], db_id)
    assert profile["data"] == {"email": "ann@example.org", "phones": ["+4712345678"], "city": "Bergen", "tier": 1}
    other = api.ok("profiles/import", db_id=db_id, email="bob@example.org")
    assert PROFILE_ID.fullmatch(other["profile_id"]) and other["profile_id"] != created["profile_id"]


def test_profile_import_by_custom_field_then_get_by_each_mode(api: Api) -> None:
    db_id = api.database()
    profile_id = api.ok(
        "profiles/import",
        db_id=db_id,
        matching="custom",
        field_name="crm_id",
        field_value="A-1001",
        data={"email": "ann@example.org", "phones": ["+7 (900) 000-00-00"]},
    )["profile_id"]
    for selector in (
        {"matching": "custom", "field_name": "crm_id", "field_value": "A-1001"},
        {"email": "ann@example.org"},
        {"matching": "phone", "phone": "79000000000"},
        {"profile_id": profile_id},
    ):
        assert api.ok("profiles/get", db_id=db_id, **selector)["profile_id"] == profile_id, selector


def test_profile_get_of_an_unknown_profile_is_404(api: Api) -> None:
    db_id = api.database()
    error, text = refused(api, "profiles/get", db_id=db_id, email="nobody@example.org")
    assert error == 404 and "Profile not found" in text
    assert refused(api, "profiles/get", db_id=4242, email="nobody@example.org") == (404, "Database 4242 not found")


def test_profile_import_into_an_unknown_database_is_404(api: Api) -> None:
    assert refused(api, "profiles/import", db_id=4242, email="ann@example.org") == (404, "Database 4242 not found")


@pytest.mark.parametrize(
    "fields",
    [{"email": "ann@example.org", "data": {"phones": "x"}}, {"email": "ann@example.org", "data": {"email": 5}}],
    ids=["phones-not-digits", "email-not-text"],
)
def test_profile_import_with_bad_data_is_400_and_creates_nothing(api: Api, fields: dict[str, Any]) -> None:
    db_id = api.database()
    assert refused(api, "profiles/import", db_id=db_id, **fields)[0] == 400
    assert refused(api, "profiles/get", db_id=db_id, email="ann@example.org")[0] == 404


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "ann\x00@example.org"}, "data.email"),
        ({"email": "ann@example.org\x1b"}, "data.email"),
        ({"phones": ["+1 555\x00 0100"]}, "data.phones"),
        ({"city": "Os\x00lo"}, "data.city"),
        ({"city": "Oslo\x7f"}, "data.city"),
        ({"city": "Oslo\x85"}, "data.city"),
        ({"note": "line\nbreak"}, "data.note"),
        ({"ok": "fine", "crm\x00id": "1"}, "crm\\x00id"),
    ],
    ids=["email-nul", "email-escape", "phone-nul", "field-nul", "field-del", "field-c1", "field-newline", "name-nul"],
)
def test_profile_import_refuses_control_characters_in_data(api: Api, data: dict[str, Any], field: str) -> None:
    """NUL and the other control characters (Unicode Cc) would be a driver error on PostgreSQL and stored as they are
    on SQLite; both refuse them alike, naming the field, and store nothing."""
    db_id = api.database()
    error, text = refused(api, "profiles/import", db_id=db_id, email="ann@example.org", data=data)
    assert (error, field in text) == (400, True), text
    assert refused(api, "profiles/get", db_id=db_id, email="ann@example.org")[0] == 404
    # Nor does a refused update change a profile that exists.
    api.ok("profiles/import", db_id=db_id, email="ann@example.org", data={"city": "Oslo"})
    assert refused(api, "profiles/import", db_id=db_id, email="ann@example.org", data=data)[0] == 400
    stored = api.ok("profiles/get", db_id=db_id, email="ann@example.org")["data"]
    assert (stored["email"], stored["phones"], stored["city"]) == ("ann@example.org", [], "Oslo")
    assert set(stored) == {"email", "phones", "city"}


@pytest.mark.parametrize("name", ["crm id", "a&b", "1st", "", "x:y", "<tag>"])
def test_profile_field_names_must_be_xml_names(api: Api, name: str) -> None:
    """Custom field names become element names in XML answers, so a name XML cannot carry is refused."""
    db_id = api.database()
    error, text = refused(api, "profiles/import", db_id=db_id, email="ann@example.org", data={name: "1"})
    assert error == 400 and "field name" in text, text
    error, _ = refused(api, "profiles/import", db_id=db_id, matching="custom", field_name=name, field_value="1")
    assert error == 400
    assert refused(api, "profiles/get", db_id=db_id, email="ann@example.org")[0] == 404


def test_profile_answers_in_xml_carry_the_custom_fields(api: Api) -> None:
    db_id = api.database()
    fields = {"crm_id": "A&1", "Город": "Осло", "tier.level": 2, "opt-in": True}
    api.ok("profiles/import", db_id=db_id, email="ann@example.org", data={**fields, "phones": ["+1 555", "+1 556"]})
    response = api.client.post(
        "/api/v1.1/profiles/get",
        json={"db_id": db_id, "email": "ann@example.org", "format": "xml"},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    data = ET.fromstring(response.content).find("data/data")
    assert data is not None, response.text
    assert {child.tag: child.text for child in data if child.tag != "phones"} == {
        "crm_id": "A&1",
        "email": "ann@example.org",
        "opt-in": "true",
        "tier.level": "2",
        "Город": "Осло",
    }
    assert [phone.text for phone in data.findall("phones")] == ["+1 555", "+1 556"]


def test_profile_import_in_xml_with_nested_data(api: Api) -> None:
    db_id = api.database()
    body = (
        f"<xml><db_id>{db_id}</db_id><email>ann@example.org</email>"
        "<data><phones>+1 555</phones><city>Oslo</city></data></xml>"
    )
    response = api.client.post(
        "/api/v1.1/profiles/import",
        content=body,
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/xml"},
    )
    assert response.json()["error"] == 0, response.text
    profile = api.ok("profiles/get", db_id=db_id, email="ann@example.org")
    assert profile["data"] == {"email": "ann@example.org", "phones": ["+1 555"], "city": "Oslo"}


def _profile_holding(api: Api, *codes: str) -> tuple[int, int]:
    loyalty_id = api.program()
    api.codes(loyalty_id, *codes)
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    api.profile(db_id, "bob@example.org")
    for code in codes:
        attach(api, loyalty_id, db_id, "ann@example.org", code)
    return loyalty_id, db_id


def test_profile_delete_is_409_while_it_holds_codes(api: Api) -> None:
    loyalty_id, db_id = _profile_holding(api, "A-1")
    error, text = refused(api, "profiles/delete", db_id=db_id, email="ann@example.org")
    assert error == 409 and "force" in text, text
    assert api.ok("profiles/get", db_id=db_id, email="ann@example.org")
    assert get_code(api, loyalty_id, "A-1")["is_attached"] is True


def test_profile_delete_with_force_frees_the_code_back_to_the_pool(api: Api) -> None:
    loyalty_id, db_id = _profile_holding(api, "A-1")
    assert api.ok("profiles/delete", db_id=db_id, email="ann@example.org", force=True) is None
    assert refused(api, "profiles/get", db_id=db_id, email="ann@example.org")[0] == 404
    freed = get_code(api, loyalty_id, "A-1")
    assert (freed["is_attached"], freed["attached"]) == (False, "")
    assert "profile_id" not in freed
    assert stats(api, loyalty_id)["free"] == 1
    assert attach(api, loyalty_id, db_id, "bob@example.org") == "A-1"  # handed out again from the pool


def test_profile_delete_with_force_is_409_while_it_holds_a_redeemed_code(api: Api) -> None:
    loyalty_id, db_id = _profile_holding(api, "A-1", "A-2")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="A-1")
    error, text = refused(api, "profiles/delete", db_id=db_id, email="ann@example.org", force=True)
    assert error == 409 and "activated" in text, text
    assert api.ok("profiles/get", db_id=db_id, email="ann@example.org")
    assert get_code(api, loyalty_id, "A-1")["is_activated"] is True
    assert get_code(api, loyalty_id, "A-2")["is_attached"] is True  # a refused call changes nothing


def test_profile_delete_without_codes_needs_no_force(api: Api) -> None:
    _, db_id = _profile_holding(api, "A-1")
    assert api.ok("profiles/delete", db_id=db_id, email="bob@example.org") is None
    assert refused(api, "profiles/get", db_id=db_id, email="bob@example.org")[0] == 404
    assert api.ok("profiles/get", db_id=db_id, email="ann@example.org")


def test_profile_delete_of_an_unknown_profile_is_404(api: Api) -> None:
    db_id = api.database()
    assert refused(api, "profiles/delete", db_id=db_id, email="nobody@example.org", force=True)[0] == 404


# --- tokens ----------------------------------------------------------------------------------------------------


def test_token_create_shows_the_token_once_and_it_works_at_once(api: Api) -> None:
    created = api.ok("tokens/create", role="read", name="reporting")
    assert (created["role"], created["name"]) == ("read", "reporting")
    assert isinstance(created["id"], int) and isinstance(created["token"], str) and len(created["token"]) >= 32
    loyalty_id = api.program()
    assert api.ok("promocodes/programs/get", created["token"], loyalty_id=loyalty_id)["id"] == loyalty_id
    assert api.call("promocodes/import", created["token"], loyalty_id=loyalty_id, codes=["A"])["error"] == 403
    listed = [t for t in api.ok("tokens/list") if t["id"] == created["id"]]
    assert listed == [{key: value for key, value in created.items() if key != "token"}]


def test_token_create_makes_a_new_token_every_time(api: Api) -> None:
    first = api.ok("tokens/create", role="write")
    second = api.ok("tokens/create", role="write")
    assert first["id"] != second["id"] and first["token"] != second["token"]


@pytest.mark.parametrize("fields", [{}, {"role": "owner"}, {"role": ""}, {"role": "admin", "name": 5}])
def test_token_create_needs_a_known_role(api: Api, fields: dict[str, Any]) -> None:
    before = api.ok("tokens/list")
    error, text = refused(api, "tokens/create", **fields)
    assert error == 400 and ("role" in text or "name" in text), text
    assert api.ok("tokens/list") == before


def test_token_list_shows_every_token_of_the_account(api: Api) -> None:
    api.ok("tokens/create", role="write", name="shop")
    api.ok("tokens/create", role="read", name="report")
    listed = api.ok("tokens/list")
    assert [(t["role"], t["name"]) for t in listed][-2:] == [("write", "shop"), ("read", "report")]
    assert listed[0]["role"] == "admin"  # the fixture's own token


def test_token_revoke_marks_the_token_and_stops_it(api: Api) -> None:
    created = api.ok("tokens/create", role="write", name="shop")
    revoked = api.ok("tokens/revoke", id=created["id"])
    assert revoked["id"] == created["id"] and RFC3339.fullmatch(revoked["revoked"]), revoked
    assert "token" not in revoked
    assert [t["revoked"] for t in api.ok("tokens/list") if t["id"] == created["id"]] == [revoked["revoked"]]
    assert api.call("promocodes/programs/list", created["token"])["error"] == 401


def test_token_revoke_of_an_unknown_token_is_404(api: Api) -> None:
    assert refused(api, "tokens/revoke", id=4242) == (404, "Token 4242 not found")
