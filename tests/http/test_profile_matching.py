"""Profile matching (docs/api.md#profile-matching), seen through attach, detach and activate on both adapters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api
from tests.http.shop import ANN, BOB, Shop

DORA = "Dora.Mixed@Example.ORG"
PHONE = "+7 (900) 000-00-00"


class Crowd(Shop):
    """A shop whose database also holds dora: a mixed-case email, a formatted phone and two custom fields."""

    def __init__(self, api: Api, *codes: str, **settings: Any) -> None:
        super().__init__(api, *codes, **settings)
        self.dora = api.profile(self.db_id, DORA, phones=[PHONE], crm_id="A-1001", card=42, club="77")

    def bound_to(self, **fields: Any) -> str:
        """Attach the code ``A`` to the profile ``fields`` name; return the profile id it was bound to."""
        assert self.ok("attach", db_id=self.db_id, code="A", **fields) == {"code": "A"}
        profile_id: str = self.get("A")["profile_id"]
        return profile_id

    def not_bound(self, error: int, text: str | None = None, **fields: Any) -> None:
        """Attach ``A`` is refused with ``error``; the code stays free and nothing else is created."""
        self.refused("attach", error, text, db_id=self.db_id, code="A", **fields)
        assert self.get("A")["is_attached"] is False
        assert [item["code"] for item in self.export()] == ["A"]


def test_matching_defaults_to_email(api: Api) -> None:
    crowd = Crowd(api, "A")
    assert crowd.bound_to(email=BOB) == crowd.profile_ids[BOB]


@pytest.mark.parametrize("matching", ["email", "email_profile"])
def test_email_modes_find_the_profile_by_email(api: Api, matching: str) -> None:
    crowd = Crowd(api, "A")
    assert crowd.bound_to(matching=matching, email=ANN) == crowd.profile_ids[ANN]


@pytest.mark.parametrize("given", ["dora.mixed@example.org", "DORA.MIXED@EXAMPLE.ORG", "  Dora.Mixed@example.org "])
@pytest.mark.parametrize("matching", [None, "email", "email_profile"])
def test_email_is_compared_case_insensitively(api: Api, given: str, matching: str | None) -> None:
    crowd = Crowd(api, "A")
    extra = {} if matching is None else {"matching": matching}
    assert crowd.bound_to(email=given, **extra) == crowd.dora


@pytest.mark.parametrize("given", ["79000000000", "+79000000000", "+7 900 000 00 00", "7-900-000-00-00", PHONE])
def test_phones_are_compared_by_their_digits(api: Api, given: str) -> None:
    crowd = Crowd(api, "A")
    assert crowd.bound_to(matching="phone", phone=given) == crowd.dora


def test_a_plain_stored_phone_matches_a_formatted_one(api: Api) -> None:
    crowd = Crowd(api, "A")
    eve = api.profile(crowd.db_id, "eve@example.org", phones=["79001112233"])
    assert crowd.bound_to(matching="phone", phone="+7 (900) 111-22-33") == eve


def test_phone_with_other_digits_is_not_found(api: Api) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(404, "Profile not found", matching="phone", phone="+7 (900) 000-00-01")
    crowd.not_bound(404, "Profile not found", matching="phone", phone="9000000000")  # no country code


def test_phone_without_digits_is_400(api: Api) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(400, matching="phone", phone="call me")


def test_profile_id_mode(api: Api) -> None:
    crowd = Crowd(api, "A")
    assert crowd.bound_to(matching="profile_id", profile_id=crowd.profile_ids[BOB]) == crowd.profile_ids[BOB]


@pytest.mark.parametrize(
    ("fields", "who"),
    [
        ({"profile_id": "<bob>"}, BOB),
        ({"phone": "79000000000"}, DORA),
        ({"field_name": "crm_id", "field_value": "A-1001"}, DORA),
        ({"email": ANN}, ANN),
    ],
)
def test_omitted_matching_uses_the_mode_of_the_only_identifying_field(
    api: Api, fields: dict[str, str], who: str
) -> None:
    crowd = Crowd(api, "A")
    if fields.get("profile_id") == "<bob>":
        fields = {"profile_id": crowd.profile_ids[BOB]}
    expected = crowd.dora if who == DORA else crowd.profile_ids[who]
    assert crowd.bound_to(**fields) == expected


def test_omitted_matching_with_several_identifying_fields_uses_email(api: Api) -> None:
    crowd = Crowd(api, "A")
    assert crowd.bound_to(email=ANN, profile_id=crowd.profile_ids[BOB]) == crowd.profile_ids[ANN]
    crowd.ok("detach", code="A", db_id=crowd.db_id, email=ANN)
    assert crowd.bound_to(email=ANN, phone="79000000000") == crowd.profile_ids[ANN]


def test_omitted_matching_with_several_fields_but_no_email_is_400(api: Api) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(400, "`email`", phone="79000000000", profile_id=crowd.dora)
    crowd.not_bound(400, "`email`", profile_id=crowd.dora, field_name="crm_id", field_value="A-1001")


@pytest.mark.parametrize(
    ("name", "value"),
    [("crm_id", "A-1001"), ("card", 42), ("card", "42"), ("club", 77), ("club", "77")],
)
def test_custom_mode_matches_string_and_int_values(api: Api, name: str, value: str | int) -> None:
    crowd = Crowd(api, "A")
    assert crowd.bound_to(matching="custom", field_name=name, field_value=value) == crowd.dora


def test_custom_mode_compares_the_named_field_only(api: Api) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(404, "Profile not found", matching="custom", field_name="card", field_value="A-1001")
    crowd.not_bound(404, "Profile not found", matching="custom", field_name="crm_id", field_value="a-1001")
    crowd.not_bound(404, "Profile not found", matching="custom", field_name="nothing", field_value="42")


@pytest.mark.parametrize(
    "fields",
    [
        {"matching": "custom", "field_value": "A-1001"},
        {"matching": "custom", "field_name": "crm_id"},
        {"matching": "custom", "field_name": "crm_id", "field_value": ""},
        {"matching": "custom", "field_name": "", "field_value": "A-1001"},
    ],
)
def test_custom_mode_needs_field_name_and_field_value(api: Api, fields: dict[str, Any]) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(400, "field_", **fields)


@pytest.mark.parametrize("matching", ["sms", "email_sub", "EMAIL", "push_sub"])
def test_unknown_matching_is_400(api: Api, matching: str) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(400, "matching", matching=matching, email=ANN)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "email"),
        ({"matching": "email"}, "email"),
        ({"matching": "email", "email": "   "}, "email"),
        ({"matching": "email_profile", "phone": "79000000000"}, "email"),
        ({"matching": "phone", "email": ANN}, "phone"),
        ({"matching": "profile_id", "email": ANN}, "profile_id"),
        ({"matching": "custom", "email": ANN}, "field_value"),
    ],
)
def test_missing_identifying_field_is_400(api: Api, fields: dict[str, Any], named: str) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(400, f"`{named}`", **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "nobody@example.org"},
        {"matching": "email_profile", "email": "nobody@example.org"},
        {"matching": "phone", "phone": "1234567"},
        {"matching": "profile_id", "profile_id": "0123456789abcdef01234567"},
        {"matching": "custom", "field_name": "crm_id", "field_value": "Z-9"},
    ],
)
def test_no_matching_profile_is_404(api: Api, fields: dict[str, Any]) -> None:
    crowd = Crowd(api, "A")
    crowd.not_bound(404, "Profile not found", **fields)


def test_no_profile_is_404_also_for_a_code_attach_would_create(api: Api) -> None:
    crowd = Crowd(api, "A")
    crowd.refused("attach", 404, "Profile not found", db_id=crowd.db_id, code="NEW", email="nobody@example.org")
    crowd.refused("attach", 404, "Profile not found", db_id=crowd.db_id, email="nobody@example.org")
    assert [item["code"] for item in crowd.export()] == ["A"]


def test_profiles_of_another_database_are_not_found(api: Api) -> None:
    crowd = Crowd(api, "A")
    other_db = api.database("other")
    api.profile(other_db, "zed@example.org")
    crowd.not_bound(404, "Profile not found", email="zed@example.org")
    crowd.refused("attach", 404, "Profile not found", db_id=other_db, code="A", email=ANN)
    crowd.refused("attach", 404, "Database", db_id=9999, code="A", email=ANN)


@pytest.mark.parametrize(
    "fields",
    [
        {"matching": "phone", "phone": "8 800 555 35 35"},
        {"matching": "custom", "field_name": "tier", "field_value": "gold"},
    ],
)
def test_several_matching_profiles_is_409(api: Api, fields: dict[str, Any]) -> None:
    crowd = Crowd(api, "A")
    api.profile(crowd.db_id, "twin1@example.org", phones=["88005553535"], tier="gold")
    api.profile(crowd.db_id, "twin2@example.org", phones=["+8 (800) 555-35-35"], tier="gold")
    text = crowd.refused("attach", 409, db_id=crowd.db_id, code="A", **fields)
    assert "everal" in text
    assert crowd.get("A")["is_attached"] is False
    crowd.refused("attach", 409, db_id=crowd.db_id, **fields)  # the pool is not touched either
    assert crowd.get("A")["is_attached"] is False


def test_detach_resolves_the_profile_by_any_mode(api: Api) -> None:
    crowd = Crowd(api, "A", "B")
    crowd.attach(DORA, "A")
    crowd.attach(DORA, "B")
    eve = api.profile(crowd.db_id, "eve@example.org", phones=["+7 900 000 00 01"])
    crowd.refused("detach", 409, "another profile", db_id=crowd.db_id, code="A", matching="phone", phone="79000000001")
    crowd.refused("detach", 409, "another profile", db_id=crowd.db_id, code="A", profile_id=eve)
    crowd.ok("detach", db_id=crowd.db_id, code="A", matching="phone", phone="79000000000")
    crowd.ok("detach", db_id=crowd.db_id, code="B", matching="custom", field_name="card", field_value=42)
    assert crowd.get("A")["is_attached"] is False
    assert crowd.get("B")["is_attached"] is False


def test_detach_refuses_an_unknown_or_ambiguous_profile(api: Api) -> None:
    crowd = Crowd(api, "A")
    crowd.attach(ANN, "A")
    crowd.refused("detach", 404, "Profile not found", db_id=crowd.db_id, code="A", email="nobody@example.org")
    crowd.refused("detach", 400, "matching", db_id=crowd.db_id, code="A", matching="fax", email=ANN)
    assert crowd.get("A")["is_attached"] is True


def test_activate_of_a_multiple_usage_code_resolves_the_profile_by_any_mode(api: Api) -> None:
    crowd = Crowd(api, "U", multiple_usage=True)
    crowd.attach(ANN, "U")
    crowd.attach(DORA, "U")
    crowd.activate("U", db_id=crowd.db_id, profile_id=crowd.dora)
    crowd.refused("activate", 409, "already activated", code="U", db_id=crowd.db_id, phone=PHONE)
    crowd.activate("U", db_id=crowd.db_id, matching="email_profile", email=ANN.upper())
    crowd.refused("activate", 400, "matching", code="U", db_id=crowd.db_id, matching="nope", email=ANN)
    assert crowd.get("U")["activated_count"] == 2


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("attach", {}),
        ("detach", {"code": "A"}),
        ("activate", {"code": "A"}),
        ("update", {"code": "A", "activated": True}),
    ],
)
def test_matching_fields_are_checked_before_the_program_exists(api: Api, method: str, fields: dict[str, Any]) -> None:
    """Spec 8.1.2: fields (400) before objects (404) — a bad `matching` on an unknown program is a 400."""
    body = api.call(f"promocodes/{method}", loyalty_id=999_999, db_id=999_999, matching="fax", **fields)
    assert body["error"] == 400, body
    assert "matching" in body["error_text"]
