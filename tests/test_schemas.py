"""Text fields refuse control characters at the door, dates outside years 1-9999 and over-long templates are 400:
each used to be a 500 on PostgreSQL (NUL, overflow) or stored as is on SQLite (docs/api.md#limits-on-hostile-input)."""

from __future__ import annotations

from typing import Any

import pytest

from promocodes.models import Role
from tests.helpers import Api
from tests.http.helpers import error_of, post_json

NUL = "\x00"


def _refused(api: Api, method: str, fields: dict[str, Any], field: str, token: str | None = None) -> None:
    error, text = error_of(post_json(api, method, fields, token=token or "admin"))
    assert error == 400, text
    assert f"`{field}`" in text and "control characters" in text, text


@pytest.mark.parametrize("char", [NUL, "\x1b", "\x7f", "\x85", "\n"])
@pytest.mark.parametrize("field", ["name", "short_name", "template", "valid_from"])
def test_program_text_fields_refuse_control_characters(api: Api, field: str, char: str) -> None:
    _refused(api, "promocodes/programs/create", {"name": "Sale", field: f"A{char}#"}, field)
    assert api.ok("promocodes/programs/list") == []  # nothing was stored


def test_a_description_may_hold_tabs_and_line_breaks_but_no_other_control_character(api: Api) -> None:
    created = api.ok("promocodes/programs/create", name="Sale", description="line 1\r\nline 2\tend")
    assert created["description"] == "line 1\r\nline 2\tend"
    _refused(api, "promocodes/programs/create", {"name": "Sale", "description": f"a{NUL}b"}, "description")
    _refused(api, "promocodes/programs/update", {"loyalty_id": created["id"], "description": "\x1b[31m"}, "description")


@pytest.mark.parametrize(
    ("method", "fields", "field"),
    [
        ("databases/create", {"name": f"main{NUL}"}, "name"),
        ("tokens/create", {"role": "read", "name": f"ci{NUL}"}, "name"),
        ("profiles/import", {"db_id": "DB", "email": f"ann{NUL}@example.org"}, "email"),
        (
            "profiles/import",
            {"db_id": "DB", "matching": "custom", "field_name": "crm", "field_value": NUL},
            "field_value",
        ),
        (
            "profiles/import",
            {"db_id": "DB", "matching": "custom", "field_name": f"c{NUL}", "field_value": "1"},
            "field_name",
        ),
        ("profiles/get", {"db_id": "DB", "matching": "profile_id", "profile_id": f"ab{NUL}"}, "profile_id"),
        ("profiles/get", {"db_id": "DB", "email": f"{NUL}"}, "email"),
        ("profiles/get", {"db_id": "DB", "matching": f"email{NUL}", "email": "a@b.c"}, "matching"),
        ("promocodes/get", {"loyalty_id": "LID", "code": f"A{NUL}"}, "code"),
        ("promocodes/attach", {"loyalty_id": "LID", "db_id": "DB", "phone": f"7900{NUL}"}, "phone"),
        (
            "promocodes/update",
            {"loyalty_id": "LID", "code": "A", "expire_date": f"2030-01-01T00:00:00Z{NUL}"},
            "expire_date",
        ),
    ],
)
def test_every_text_field_refuses_nul_on_both_adapters(
    api: Api, method: str, fields: dict[str, Any], field: str
) -> None:
    loyalty_id, db_id = api.program(), api.database()
    sent = {name: {"DB": db_id, "LID": loyalty_id}.get(value, value) for name, value in fields.items()}
    _refused(api, method, sent, field)
    # A read-only token gets the same 400 (it used to be a 500 on PostgreSQL for a look-up).
    if method.endswith("/get"):
        _refused(api, method, sent, field, token=api.token_for(Role.READ))
    assert [database["name"] for database in api.ok("databases/list")] == ["main"]
    assert [token["name"] for token in api.ok("tokens/list")] in ([""], ["", ""])  # none named "ci\x00"


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_dates_outside_years_1_to_9999_are_400(api: Api, value: str) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A-1")
    error, text = error_of(
        post_json(api, "promocodes/update", {"loyalty_id": loyalty_id, "code": "A-1", "expire_date": value})
    )
    assert (error, "expire_date" in text) == (400, True), text
    assert api.ok("promocodes/get", loyalty_id=loyalty_id, code="A-1")["expire_date"] == ""
    for field in ("valid_from", "valid_to"):
        error, text = error_of(post_json(api, "promocodes/programs/create", {"name": "S", field: value}))
        assert (error, field in text) == (400, True), text


def test_the_extreme_dates_themselves_are_kept(api: Api) -> None:
    loyalty_id = api.program(valid_from="0001-01-01T00:00:00Z", valid_to="9999-12-31T23:59:59Z")
    program = api.ok("promocodes/programs/get", loyalty_id=loyalty_id)
    assert (program["valid_from"], program["valid_to"]) == ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")


def test_a_template_making_codes_over_255_characters_is_refused_where_it_is_set(api: Api) -> None:
    long_template = "#" * 1000
    error, text = error_of(
        post_json(
            api, "promocodes/programs/create", {"name": "S", "template": long_template, "generate_on_attach": True}
        )
    )
    assert (error, "255" in text) == (400, True), text
    loyalty_id = api.program(template="####", generate_on_attach=True)
    error, text = error_of(
        post_json(api, "promocodes/programs/update", {"loyalty_id": loyalty_id, "template": long_template})
    )
    assert (error, "255" in text) == (400, True), text
    assert api.ok("promocodes/programs/get", loyalty_id=loyalty_id)["template"] == "####"
