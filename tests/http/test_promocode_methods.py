"""The seven promo-code operations and their rules (docs/api.md#promo-code-methods), through the HTTP API on both
adapters."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.helpers import GET_KEYS, Api
from tests.http.shop import ANN, BOB, CAROL, FUTURE, PAST, Shop

CODE_METHODS = ("get", "activate", "update", "attach", "detach")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def items(body: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(item["code"], item["error"], item["error_text"]) for item in body["data"]]


def counters(body: dict[str, Any]) -> tuple[int, int, int]:
    """``(inserted, duplicated, discarded_by_limit)`` of an import answer."""
    return body["inserted"], body["duplicated"], body["discarded_by_limit"]


def codes_of(shop: Shop) -> list[str]:
    return [item["code"] for item in shop.export()]


def request_for(method: str, shop: Shop, code: str) -> dict[str, Any]:
    """The fields a valid request of ``method`` needs besides ``code``."""
    if method in ("attach", "detach"):
        return {"code": code, **shop.who(ANN)}
    if method == "update":
        return {"code": code, "expire_date": FUTURE}
    return {"code": code}


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def within(text: str, before: datetime, after: datetime) -> bool:
    """The whole-second timestamp ``text`` names a moment between ``before`` and ``after``."""
    return before.replace(microsecond=0) <= parse(text) <= after


# --- 8.3 codes ---------------------------------------------------------------------------------------------------


def test_import_strips_surrounding_white_space(api: Api) -> None:
    shop = Shop(api)
    body = shop.import_codes("  SPRING-1 \t", "\nSPRING-2\n")
    assert items(body) == [("SPRING-1", 0, ""), ("SPRING-2", 0, "")]
    assert shop.get("SPRING-1")["code"] == "SPRING-1"
    assert shop.get("  SPRING-2 ")["code"] == "SPRING-2"
    assert codes_of(shop) == ["SPRING-1", "SPRING-2"]


def test_import_refuses_bad_codes_per_item(api: Api) -> None:
    shop = Shop(api)
    longest, too_long = "L" * 255, "L" * 256
    body = shop.import_codes("", "   ", too_long, "A\x00B", "A\x7fB", "A\x9fB", longest, "OK")
    verdicts = [(error, text) for _, error, text in items(body)]
    assert [error for error, _ in verdicts] == [400, 400, 400, 400, 400, 400, 0, 0]
    assert all(text for _, text in verdicts[:6])
    assert body["data"][2]["code"] == too_long  # the item names what was sent
    assert counters(body) == (2, 0, 0)
    assert codes_of(shop) == [longest, "OK"]


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x1f", "\x7f", "\x80", "\x9f"])
def test_control_characters_are_refused_per_item_on_import(api: Api, char: str) -> None:
    shop = Shop(api)
    body = shop.import_codes(f"A{char}B", "A\xa0B")  # U+00A0 is next to the Cc range, but not in it
    assert [error for _, error, _ in items(body)] == [400, 0]
    assert "control" in body["data"][0]["error_text"]
    assert codes_of(shop) == ["A\xa0B"]


def test_information_separators_are_control_characters_not_white_space(api: Api) -> None:
    shop = Shop(api, "A")
    body = shop.import_codes("\x1fB", "C\x1c", " \tD\n")
    assert [error for _, error, _ in items(body)] == [400, 400, 0]
    shop.refused("attach", 400, "control", code="\x1f", **shop.who(ANN))  # not an empty code: refused
    shop.refused("get", 400, "control", code="A\x1e")
    assert shop.get("A")["is_attached"] is False
    assert codes_of(shop) == ["A", "D"]


@pytest.mark.parametrize("method", CODE_METHODS)
@pytest.mark.parametrize("bad", ["A\x00B", "A\x1bB", "A\x85B", "\x1eA", "X" * 256])
def test_bad_codes_are_refused_for_the_request_elsewhere(api: Api, method: str, bad: str) -> None:
    shop = Shop(api, "A")
    shop.refused(method, 400, **request_for(method, shop, bad))
    assert codes_of(shop) == ["A"]  # attach did not create the bad code


@pytest.mark.parametrize("method", CODE_METHODS)
def test_a_255_character_code_works_on_every_path(api: Api, method: str) -> None:
    code = "Z" * 255
    shop = Shop(api, code)
    if method in ("activate", "detach"):
        shop.attach(ANN, code)
    shop.ok(method, **request_for(method, shop, code))


def test_codes_are_case_sensitive_by_default(api: Api) -> None:
    shop = Shop(api)
    assert counters(shop.import_codes("abc", "ABC", "Abc")) == (3, 0, 0)
    assert shop.attach(ANN, "abc") == "abc"
    assert shop.get("ABC")["is_attached"] is False
    shop.refused("activate", 409, code="ABC")
    shop.activate("abc")
    assert shop.get("abc")["is_activated"] is True
    assert shop.get("Abc")["is_activated"] is False
    shop.refused("get", 404, code="aBC")


def test_case_sensitive_attach_of_another_spelling_creates_another_code(api: Api) -> None:
    shop = Shop(api, "abc")
    assert shop.attach(ANN, "ABC") == "ABC"
    assert shop.get("abc")["is_attached"] is False
    assert codes_of(shop) == ["abc", "ABC"]


def test_case_insensitive_import_finds_duplicates_by_case_fold(api: Api) -> None:
    shop = Shop(api, case_sensitive=False)
    body = shop.import_codes("ABC", "abc", "STRASSE", "straße", "Straße")
    assert items(body) == [
        ("ABC", 0, ""),
        ("abc", 500, "Promocode duplicated"),
        ("STRASSE", 0, ""),
        ("straße", 500, "Promocode duplicated"),
        ("Straße", 500, "Promocode duplicated"),
    ]
    assert counters(body) == (2, 3, 0)
    again = shop.import_codes("aBc", "strasse", "NEW")
    assert counters(again) == (1, 2, 0)
    assert codes_of(shop) == ["ABC", "STRASSE", "NEW"]


def test_case_insensitive_get_finds_the_code_under_any_spelling(api: Api) -> None:
    shop = Shop(api, "ABC", "STRASSE", case_sensitive=False)
    assert shop.get("abc")["code"] == "ABC"
    assert shop.get("aBc")["code"] == "ABC"
    assert shop.get("straße")["code"] == "STRASSE"


def test_case_insensitive_attach_binds_the_stored_code_and_answers_its_spelling(api: Api) -> None:
    shop = Shop(api, "ABC", "STRASSE", case_sensitive=False)
    assert shop.attach(ANN, "abc") == "ABC"
    assert shop.attach(ANN, "aBC") == "ABC"  # same profile, another spelling: no change
    assert shop.attach(BOB, "straße") == "STRASSE"
    shop.refused("attach", 409, code="Abc", **shop.who(BOB))  # one personal code, whatever the spelling
    assert codes_of(shop) == ["ABC", "STRASSE"]
    assert shop.get("ABC")["profile_id"] == shop.profile_ids[ANN]


def test_case_insensitive_code_attached_under_one_spelling_is_activated_only_once(api: Api) -> None:
    shop = Shop(api, "Promo", case_sensitive=False)
    shop.attach(ANN, "PROMO")
    shop.activate("promo")
    shop.refused("activate", 409, "Promo code already activated", code="PROMO")
    shop.refused("activate", 409, "Promo code already activated", code="Promo")
    shop.refused("update", 409, "Promo code already activated", code="pRoMo", activated=True)


def test_case_insensitive_update_and_detach_use_the_same_key(api: Api) -> None:
    # Stored as "abc"; every other spelling folds to it (and an unfolded lookup would miss it).
    shop = Shop(api, "abc", case_sensitive=False)
    shop.ok("update", code="ABC", expire_date=FUTURE)
    assert shop.get("abc")["expire_date"] == FUTURE
    shop.attach(ANN, "abc")
    shop.ok("update", code="aBc", activated=True)
    assert shop.get("abc")["is_activated"] is True
    shop.ok("update", code="AbC", activated=False)
    assert shop.get("abc")["is_activated"] is False
    shop.ok("detach", code="ABC", **shop.who(ANN))
    assert shop.get("abc")["is_attached"] is False


def test_case_insensitive_attach_with_create_on_attach_does_not_duplicate(api: Api) -> None:
    shop = Shop(api, "STRASSE", case_sensitive=False)
    assert shop.attach(ANN, "Straße") == "STRASSE"
    assert codes_of(shop) == ["STRASSE"]


def test_the_same_code_may_live_in_two_programs(api: Api) -> None:
    first = Shop(api, "SHARED")
    second = Shop(api)
    assert counters(second.import_codes("SHARED")) == (1, 0, 0)
    first.attach(ANN, "SHARED")
    first.activate("SHARED")
    assert second.get("SHARED")["is_attached"] is False
    assert second.get("SHARED")["loyalty_id"] == second.loyalty_id
    second.attach(BOB, "SHARED")
    second.activate("SHARED")  # the other program's activation does not count here


# --- 8.5.10 import -----------------------------------------------------------------------------------------------


def test_import_answers_every_item_in_input_order(api: Api) -> None:
    shop = Shop(api)
    body = shop.import_codes("C-3", "A-1", "B-2")
    assert items(body) == [("C-3", 0, ""), ("A-1", 0, ""), ("B-2", 0, "")]
    assert counters(body) == (3, 0, 0)
    assert (body["error"], body["error_text"]) == (0, "Successful operation")
    assert codes_of(shop) == ["C-3", "A-1", "B-2"]


def test_import_second_occurrence_in_one_request_is_duplicated(api: Api) -> None:
    shop = Shop(api)
    body = shop.import_codes("A", "B", "A", "A")
    assert items(body) == [
        ("A", 0, ""),
        ("B", 0, ""),
        ("A", 500, "Promocode duplicated"),
        ("A", 500, "Promocode duplicated"),
    ]
    assert counters(body) == (2, 2, 0)
    assert codes_of(shop) == ["A", "B"]


def test_import_of_an_existing_code_is_duplicated(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    body = shop.import_codes("B", "A")
    assert items(body) == [("B", 0, ""), ("A", 500, "Promocode duplicated")]
    assert counters(body) == (1, 1, 0)
    assert shop.get("A")["is_attached"] is True  # the existing code is untouched


def test_import_discards_the_rest_at_the_codes_limit(api: Api) -> None:
    shop = Shop(api, codes_limit=3)
    body = shop.import_codes("A", "B", "C", "D", "E")
    assert items(body) == [
        ("A", 0, ""),
        ("B", 0, ""),
        ("C", 0, ""),
        ("D", 402, "Program limit exceeded"),
        ("E", 402, "Program limit exceeded"),
    ]
    assert counters(body) == (3, 0, 2)
    later = shop.import_codes("F")
    assert items(later) == [("F", 402, "Program limit exceeded")]
    assert counters(later) == (0, 0, 1)
    assert codes_of(shop) == ["A", "B", "C"]


def test_import_duplicates_use_no_room_under_the_limit(api: Api) -> None:
    shop = Shop(api, "OLD", codes_limit=3)
    body = shop.import_codes("OLD", "NEW-1", "NEW-1", "OLD", "NEW-2", "NEW-3")
    assert items(body) == [
        ("OLD", 500, "Promocode duplicated"),
        ("NEW-1", 0, ""),
        ("NEW-1", 500, "Promocode duplicated"),
        ("OLD", 500, "Promocode duplicated"),
        ("NEW-2", 0, ""),
        ("NEW-3", 402, "Program limit exceeded"),
    ]
    assert counters(body) == (2, 3, 1)
    assert sum(counters(body)) == len(body["data"])
    assert codes_of(shop) == ["OLD", "NEW-1", "NEW-2"]


def test_import_refused_items_use_no_room_under_the_limit(api: Api) -> None:
    shop = Shop(api, codes_limit=1)
    body = shop.import_codes("", "A\x00", "ONLY", "MORE")
    assert [error for _, error, _ in items(body)] == [400, 400, 0, 402]
    assert counters(body) == (1, 0, 1)


def test_import_with_a_zero_limit_discards_everything(api: Api) -> None:
    shop = Shop(api, codes_limit=0)
    body = shop.import_codes("A", "B")
    assert counters(body) == (0, 0, 2)
    assert shop.export() == []


def test_import_counters_sum_to_the_items(api: Api) -> None:
    shop = Shop(api, "X", codes_limit=4)
    body = shop.import_codes("A", "X", "B", "A", "C", "D", "E")
    inserted, duplicated, discarded = counters(body)
    assert (inserted, duplicated, discarded) == (3, 2, 2)
    assert inserted == sum(1 for _, error, _ in items(body) if error == 0)
    assert duplicated == sum(1 for _, error, _ in items(body) if error == 500)
    assert discarded == sum(1 for _, error, _ in items(body) if error == 402)


@pytest.mark.parametrize("fields", [{"codes": []}, {}])
def test_import_without_codes_is_refused(api: Api, fields: dict[str, Any]) -> None:
    shop = Shop(api)
    shop.refused("import", 400, **fields)
    assert shop.export() == []


def test_import_into_an_unknown_program_is_404_without_counters(api: Api) -> None:
    body = api.call("promocodes/import", loyalty_id=9999, codes=["A"])
    assert (body["error"], body["data"]) == (404, None)
    assert not {"inserted", "duplicated", "discarded_by_limit"} & set(body)


def test_imported_codes_start_free_unexpired_with_created_now(api: Api) -> None:
    shop = Shop(api)
    before = datetime.now(UTC)
    shop.import_codes("NEW")
    after = datetime.now(UTC)
    data = shop.get("NEW")
    assert within(data["created"], before, after)
    assert {key: value for key, value in data.items() if key != "created"} == {
        "is_attached": False,
        "is_activated": False,
        "is_expired": False,
        "attached": "",
        "activated": "",
        "expired": "",
        "expire_date": "",
        "loyalty_id": shop.loyalty_id,
        "code": "NEW",
    }


# --- get (3.2, 8.5.8) --------------------------------------------------------------------------------------------


def test_get_free_code_has_every_field_in_the_documented_order(api: Api) -> None:
    shop = Shop(api, "FREE")
    data = shop.get("FREE")
    assert list(data) == GET_KEYS[:-2]
    assert TIMESTAMP.fullmatch(data["created"])
    assert [data[key] for key in ("attached", "activated", "expired", "expire_date")] == ["", "", "", ""]
    assert [data[key] for key in ("is_attached", "is_activated", "is_expired")] == [False, False, False]


def test_get_bound_code_names_its_database_and_profile(api: Api) -> None:
    shop = Shop(api, "BOUND")
    before = datetime.now(UTC)
    shop.attach(BOB, "BOUND")
    after = datetime.now(UTC)
    data = shop.get("BOUND")
    assert list(data) == GET_KEYS
    assert data["is_attached"] is True
    assert within(data["attached"], before, after)
    assert (data["database_id"], data["profile_id"]) == (shop.db_id, shop.profile_ids[BOB])
    assert (data["is_activated"], data["activated"]) == (False, "")


def test_get_activated_code(api: Api) -> None:
    shop = Shop(api, "USED")
    shop.attach(ANN, "USED")
    before = datetime.now(UTC)
    shop.activate("USED")
    after = datetime.now(UTC)
    data = shop.get("USED")
    assert data["is_activated"] is True
    assert within(data["activated"], before, after)
    assert data["is_attached"] is True


def test_get_expired_equals_expire_date_once_passed(api: Api) -> None:
    shop = Shop(api, "OLD", "NEW")
    shop.expire("OLD", PAST)
    shop.expire("NEW", FUTURE)
    old, new = shop.get("OLD"), shop.get("NEW")
    assert (old["expire_date"], old["expired"], old["is_expired"]) == (PAST, PAST, True)
    assert (new["expire_date"], new["expired"], new["is_expired"]) == (FUTURE, "", False)


def test_get_personal_code_has_no_counts(api: Api) -> None:
    shop = Shop(api, "P")
    shop.attach(ANN, "P")
    assert not {"attached_count", "activated_count"} & set(shop.get("P"))


def test_get_multiple_usage_code_shows_latest_binding_and_totals(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    free = shop.get("U")
    assert (free["attached_count"], free["activated_count"], free["is_attached"]) == (0, 0, False)
    shop.attach(ANN, "U")
    shop.attach(BOB, "U")
    data = shop.get("U")
    assert data["profile_id"] == shop.profile_ids[BOB]
    assert data["database_id"] == shop.db_id
    assert (data["attached_count"], data["activated_count"]) == (2, 0)
    assert (data["is_attached"], data["is_activated"], data["activated"]) == (True, False, "")
    shop.activate("U", **shop.who(ANN))
    data = shop.get("U")
    assert (data["is_activated"], data["attached_count"], data["activated_count"]) == (True, 2, 1)
    assert TIMESTAMP.fullmatch(data["activated"])
    assert data["profile_id"] == shop.profile_ids[BOB]  # latest binding, not the activated one
    shop.attach(CAROL, "U")
    shop.activate("U", **shop.who(CAROL))
    data = shop.get("U")
    assert data["profile_id"] == shop.profile_ids[CAROL]
    assert (data["attached_count"], data["activated_count"]) == (3, 2)


def test_get_unknown_code_is_404(api: Api) -> None:
    shop = Shop(api, "A")
    other = Shop(api, "ELSEWHERE")
    text = shop.refused("get", 404, code="MISSING")
    assert "MISSING" in text
    shop.refused("get", 404, code="ELSEWHERE")  # another program's code is not found here
    other.refused("get", 404, loyalty_id=9999, code="ELSEWHERE")


# --- activate (8.5.1, 8.5.12) ------------------------------------------------------------------------------------


def test_activate_attached_code(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.activate("A")
    data = shop.get("A")
    assert (data["is_activated"], data["is_attached"]) == (True, True)
    assert data["profile_id"] == shop.profile_ids[ANN]


def test_second_activation_is_409_and_changes_nothing(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.activate("A")
    before = shop.get("A")
    assert shop.refused("activate", 409, code="A") == "Promo code already activated"
    assert shop.get("A") == before


def test_activate_free_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    before = shop.get("A")
    shop.refused("activate", 409, "not attached", code="A")
    assert shop.get("A") == before


def test_activate_expired_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.expire("A", PAST)
    before = shop.get("A")
    shop.refused("activate", 409, "expired", code="A")
    assert shop.get("A") == before


def test_activate_in_an_inactive_program_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.program_update(active=False)
    shop.refused("activate", 409, "inactive", code="A")
    assert shop.get("A")["is_activated"] is False
    shop.program_update(active=True)
    shop.activate("A")


def test_activate_unknown_code_or_program_is_404(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("activate", 404, code="MISSING")
    shop.refused("activate", 404, loyalty_id=9999, code="A")


def test_unknown_code_in_an_inactive_program_is_404_not_409(api: Api) -> None:
    # Spec 8.1.2: the objects (404) are checked before their state (409).
    shop = Shop(api, "A", active=False, create_on_attach=False)
    shop.refused("activate", 404, "MISSING", code="MISSING")
    shop.refused("update", 404, "MISSING", code="MISSING", activated=True)
    shop.refused("attach", 404, "MISSING", code="MISSING", **shop.who(ANN))
    shop.refused("activate", 409, "inactive", code="A")
    shop.refused("attach", 409, "inactive", code="A", **shop.who(ANN))
    creating = Shop(api, active=False)
    creating.refused("attach", 409, "inactive", code="NEW", **creating.who(ANN))  # attach would create it
    assert creating.export() == []


def test_activate_multiple_usage_code_needs_the_profile(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.refused("activate", 400, "db_id", code="U")
    shop.refused("activate", 400, code="U", email=ANN)  # matching fields without db_id
    assert shop.get("U")["is_activated"] is False


def test_activate_multiple_usage_code_per_binding(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.attach(BOB, "U")
    shop.activate("U", **shop.who(ANN))
    shop.refused("activate", 409, "Promo code already activated", code="U", **shop.who(ANN))
    assert shop.get("U")["activated_count"] == 1
    shop.activate("U", **shop.who(BOB))
    assert shop.get("U")["activated_count"] == 2
    shop.refused("activate", 409, code="U", **shop.who(CAROL))  # carol holds no binding
    assert shop.get("U")["activated_count"] == 2


def test_activate_personal_code_with_profile_fields_of_another_profile_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.refused("activate", 409, code="A", **shop.who(BOB))
    assert shop.get("A")["is_activated"] is False
    shop.activate("A", **shop.who(ANN))
    assert shop.get("A")["is_activated"] is True


def test_activate_personal_code_with_incomplete_profile_fields_is_400(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.refused("activate", 400, code="A", db_id=shop.db_id)
    shop.refused("activate", 404, "Profile not found", code="A", **shop.who("nobody@example.org"))
    assert shop.get("A")["is_activated"] is False


# --- update (8.5.2) ----------------------------------------------------------------------------------------------


def test_update_with_nothing_to_change_is_400(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("update", 400, code="A")


def test_update_activated_true_activates_like_activate(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    assert shop.ok("update", code="A", activated=True) is None
    assert shop.get("A")["is_activated"] is True
    assert shop.refused("update", 409, code="A", activated=True) == "Promo code already activated"


def test_update_activated_true_on_a_free_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("update", 409, "not attached", code="A", activated=True)
    assert shop.get("A")["is_activated"] is False


def test_update_activated_true_on_an_expired_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.expire("A", PAST)
    shop.refused("update", 409, "expired", code="A", activated=True)
    assert shop.get("A")["is_activated"] is False


def test_update_activated_true_in_an_inactive_program_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.program_update(active=False)
    shop.refused("update", 409, "inactive", code="A", activated=True)
    assert shop.get("A")["is_activated"] is False
    shop.ok("update", code="A", expire_date=FUTURE)  # only the activation needs an active program


def test_update_activated_false_clears_the_activation(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.activate("A")
    assert shop.ok("update", code="A", activated=False) is None
    data = shop.get("A")
    assert (data["is_activated"], data["activated"]) == (False, "")
    assert (data["is_attached"], data["profile_id"]) == (True, shop.profile_ids[ANN])
    shop.activate("A")  # back to ATTACHED, so it can be redeemed again
    assert shop.get("A")["is_activated"] is True


@pytest.mark.parametrize("attached", [True, False])
def test_update_activated_false_on_a_code_not_activated_is_a_no_op(api: Api, attached: bool) -> None:
    shop = Shop(api, "A")
    if attached:
        shop.attach(ANN, "A")
    before = shop.get("A")
    assert shop.ok("update", code="A", activated=False) is None
    assert shop.get("A") == before


def test_update_activated_false_on_a_multiple_usage_code_clears_one_binding(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.attach(BOB, "U")
    shop.activate("U", **shop.who(ANN))
    shop.activate("U", **shop.who(BOB))
    shop.refused("update", 400, code="U", activated=False)
    shop.ok("update", code="U", activated=False, **shop.who(ANN))
    assert shop.get("U")["activated_count"] == 1
    shop.refused("activate", 409, "Promo code already activated", code="U", **shop.who(BOB))
    shop.activate("U", **shop.who(ANN))


def test_update_multiple_usage_expiry_needs_no_profile(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.ok("update", code="U", expire_date=FUTURE)
    assert shop.get("U")["expire_date"] == FUTURE


def test_update_activated_true_on_multiple_usage_needs_the_profile(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.refused("update", 400, code="U", activated=True)
    shop.ok("update", code="U", activated=True, **shop.who(ANN))
    assert shop.get("U")["activated_count"] == 1


def test_update_sets_and_clears_the_expiry(api: Api) -> None:
    shop = Shop(api, "A")
    shop.ok("update", code="A", expire_date=FUTURE)
    assert shop.get("A")["expire_date"] == FUTURE
    shop.ok("update", code="A", expire_date="")
    assert shop.get("A")["expire_date"] == ""
    shop.ok("update", code="A", expire_date=PAST)
    assert shop.get("A")["is_expired"] is True
    shop.ok("update", code="A", expire_date=None)
    data = shop.get("A")
    assert (data["expire_date"], data["expired"], data["is_expired"]) == ("", "", False)


def test_update_expire_date_offset_is_stored_in_utc(api: Api) -> None:
    shop = Shop(api, "A")
    shop.ok("update", code="A", expire_date="2999-01-01T03:00:00+03:00")
    assert shop.get("A")["expire_date"] == FUTURE


@pytest.mark.parametrize(
    "bad", ["tomorrow", "2999-01-01", "2999-01-01T00:00:00", "2999-13-01T00:00:00Z", "29990101T000000Z"]
)
def test_update_with_a_bad_date_is_400_and_changes_nothing(api: Api, bad: str) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.expire("A", FUTURE)
    before = shop.get("A")
    shop.refused("update", 400, "expire_date", code="A", expire_date=bad)
    shop.refused("update", 400, "expire_date", code="A", expire_date=bad, activated=True)
    assert shop.get("A") == before


def test_update_activation_is_judged_against_the_new_expiry(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.expire("A", FUTURE)
    shop.refused("update", 409, "expired", code="A", expire_date=PAST, activated=True)
    data = shop.get("A")
    assert (data["expire_date"], data["is_expired"], data["is_activated"]) == (FUTURE, False, False)


def test_update_future_expiry_revives_an_expired_code(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.expire("A", PAST)
    shop.ok("update", code="A", expire_date=FUTURE, activated=True)
    data = shop.get("A")
    assert (data["expire_date"], data["is_expired"], data["is_activated"]) == (FUTURE, False, True)


def test_update_clearing_the_expiry_revives_an_expired_code(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.expire("A", PAST)
    shop.ok("update", code="A", expire_date="", activated=True)
    assert shop.get("A")["is_activated"] is True


def test_update_past_expiry_expires_at_once(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.ok("update", code="A", expire_date=PAST)
    shop.refused("activate", 409, "expired", code="A")


def test_update_failed_deactivation_keeps_the_new_expiry_unapplied(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.activate("A")
    shop.refused("update", 409, code="A", expire_date=FUTURE, activated=False, **shop.who(BOB))
    data = shop.get("A")
    assert (data["expire_date"], data["is_activated"]) == ("", True)


def test_update_unknown_code_or_program_is_404(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("update", 404, code="MISSING", expire_date=FUTURE)
    shop.refused("update", 404, code="MISSING", activated=False)
    shop.refused("update", 404, code="MISSING", activated=True)
    shop.refused("update", 404, loyalty_id=9999, code="A", expire_date=FUTURE)


# --- attach with a code (8.5.3) ----------------------------------------------------------------------------------


def test_attach_free_code_binds_it(api: Api) -> None:
    shop = Shop(api, "A", "B")
    assert shop.ok("attach", code="A", **shop.who(ANN)) == {"code": "A"}
    data = shop.get("A")
    assert (data["is_attached"], data["profile_id"], data["database_id"]) == (
        True,
        shop.profile_ids[ANN],
        shop.db_id,
    )
    assert shop.get("B")["is_attached"] is False


def test_attach_to_the_same_profile_again_changes_nothing(api: Api) -> None:
    shop = Shop(api, "A", multiple_usage=False)
    shop.attach(ANN, "A")
    before = shop.get("A")
    assert shop.ok("attach", code="A", **shop.who(ANN)) == {"code": "A"}
    assert shop.get("A") == before
    shop.activate("A")
    assert shop.attach(ANN, "A") == "A"  # still the same profile's code, even once activated
    assert shop.get("A")["is_activated"] is True


def test_attach_personal_code_of_another_profile_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.refused("attach", 409, "another profile", code="A", **shop.who(BOB))
    assert shop.get("A")["profile_id"] == shop.profile_ids[ANN]


def test_attach_unknown_code_imports_it_by_default(api: Api) -> None:
    shop = Shop(api, "OLD")
    before = datetime.now(UTC)
    assert shop.attach(ANN, "NEW") == "NEW"
    after = datetime.now(UTC)
    data = shop.get("NEW")
    assert data["profile_id"] == shop.profile_ids[ANN]
    assert within(data["created"], before, after)
    assert codes_of(shop) == ["OLD", "NEW"]
    assert shop.get("OLD")["is_attached"] is False


def test_attach_unknown_code_without_create_on_attach_is_404(api: Api) -> None:
    shop = Shop(api, "OLD", create_on_attach=False)
    shop.refused("attach", 404, code="NEW", **shop.who(ANN))
    assert codes_of(shop) == ["OLD"]
    assert shop.attach(ANN, "OLD") == "OLD"  # known codes still attach


def test_attach_multiple_usage_code_binds_each_profile_once(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    for email in (ANN, BOB, ANN, CAROL, BOB):
        assert shop.attach(email, "U") == "U"
    assert shop.get("U")["attached_count"] == 3
    assert shop.get("U")["profile_id"] == shop.profile_ids[CAROL]


def test_attach_expired_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.expire("A", PAST)
    shop.refused("attach", 409, "expired", code="A", **shop.who(ANN))
    assert shop.get("A")["is_attached"] is False


def test_attach_expired_multiple_usage_code_is_409(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.expire("U", PAST)
    shop.refused("attach", 409, "expired", code="U", **shop.who(BOB))
    assert shop.get("U")["attached_count"] == 1


def test_attach_to_an_unknown_profile_binds_and_creates_nothing(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("attach", 404, "Profile not found", code="NEW", **shop.who("nobody@example.org"))
    shop.refused("attach", 404, "Profile not found", code="A", **shop.who("nobody@example.org"))
    assert codes_of(shop) == ["A"]
    assert shop.get("A")["is_attached"] is False


def test_attach_unknown_program_or_database_is_404(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("attach", 404, loyalty_id=9999, code="A", **shop.who(ANN))
    shop.refused("attach", 404, "Database", code="A", db_id=9999, email=ANN)
    assert shop.get("A")["is_attached"] is False


# --- attach without a code (8.5.4) -------------------------------------------------------------------------------


def test_attach_from_the_pool_is_first_in_first_out(api: Api) -> None:
    shop = Shop(api, "Z-FIRST")
    shop.import_codes("A-SECOND", "M-THIRD")
    assert shop.ok("attach", **shop.who(ANN)) == {"code": "Z-FIRST"}
    assert shop.attach(BOB) == "A-SECOND"
    assert shop.attach(CAROL) == "M-THIRD"
    assert shop.get("Z-FIRST")["profile_id"] == shop.profile_ids[ANN]
    assert shop.get("A-SECOND")["profile_id"] == shop.profile_ids[BOB]


def test_attach_from_the_pool_skips_bound_and_expired_codes(api: Api) -> None:
    shop = Shop(api, "A", "B", "C", "D")
    shop.attach(ANN, "A")
    shop.expire("B", PAST)
    shop.expire("C", FUTURE)
    assert shop.attach(BOB) == "C"
    assert shop.attach(CAROL) == "D"


def test_attach_from_the_pool_gives_another_code_each_time_by_default(api: Api) -> None:
    shop = Shop(api, "A", "B")
    assert shop.attach(ANN) == "A"
    assert shop.attach(ANN) == "B"


def test_attach_one_code_per_profile_returns_the_held_code(api: Api) -> None:
    shop = Shop(api, "A", "B", "C", one_code_per_profile=True)
    assert shop.attach(ANN) == "A"
    assert shop.attach(ANN) == "A"
    assert shop.attach(BOB) == "B"
    assert shop.attach(ANN) == "A"
    assert shop.get("C")["is_attached"] is False


def test_attach_one_code_per_profile_counts_a_code_attached_by_name(api: Api) -> None:
    shop = Shop(api, "A", "B", one_code_per_profile=True)
    shop.attach(ANN, "B")
    assert shop.attach(ANN) == "B"
    assert shop.get("A")["is_attached"] is False


def test_attach_with_no_free_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN)
    assert shop.refused("attach", 409, **shop.who(BOB)) == "No free promo codes"
    empty = Shop(api)
    empty.refused("attach", 409, "No free promo codes", **empty.who(ANN))
    assert empty.export() == []


def test_attach_with_an_empty_code_draws_from_the_pool(api: Api) -> None:
    shop = Shop(api, "A", "B")
    assert shop.ok("attach", code="", **shop.who(ANN)) == {"code": "A"}
    assert shop.ok("attach", code="  ", **shop.who(BOB)) == {"code": "B"}
    assert codes_of(shop) == ["A", "B"]  # no empty code was created


def test_attach_generates_from_the_template_when_the_pool_is_empty(api: Api) -> None:
    shop = Shop(api, "POOL", template="GEN-@@-####", generate_on_attach=True)
    assert shop.attach(ANN) == "POOL"  # free codes go first
    generated = shop.attach(BOB)
    assert re.fullmatch(r"GEN-[A-Z]{2}-[0-9]{4}", generated)
    another = shop.attach(CAROL)
    assert re.fullmatch(r"GEN-[A-Z]{2}-[0-9]{4}", another)
    assert another != generated
    assert shop.get(generated)["profile_id"] == shop.profile_ids[BOB]
    assert codes_of(shop) == ["POOL", generated, another]


def test_attach_without_generate_on_attach_does_not_use_the_template(api: Api) -> None:
    shop = Shop(api, template="GEN-####")
    shop.refused("attach", 409, "No free promo codes", **shop.who(ANN))
    assert shop.export() == []


def test_attach_creating_a_code_at_the_limit_is_402(api: Api) -> None:
    shop = Shop(api, "A", codes_limit=1)
    shop.refused("attach", 402, code="NEW", **shop.who(ANN))
    assert codes_of(shop) == ["A"]
    assert shop.attach(ANN, "A") == "A"  # an existing code needs no room


def test_attach_generating_a_code_at_the_limit_is_402(api: Api) -> None:
    shop = Shop(api, "A", codes_limit=2, template="G-####", generate_on_attach=True)
    assert shop.attach(ANN) == "A"
    assert shop.attach(BOB).startswith("G-")
    shop.refused("attach", 402, "limit", **shop.who(CAROL))
    assert len(shop.export()) == 2


@pytest.mark.parametrize("with_code", [True, False])
def test_attach_in_an_inactive_program_is_409(api: Api, with_code: bool) -> None:
    shop = Shop(api, "A", active=False)
    before = shop.get("A")
    shop.refused("attach", 409, "inactive", **shop.who(ANN), **({"code": "A"} if with_code else {}))
    shop.refused("attach", 409, "inactive", code="NEW", **shop.who(ANN))
    assert shop.get("A") == before
    assert codes_of(shop) == ["A"]


@pytest.mark.parametrize(
    "window", [{"valid_to": PAST}, {"valid_from": FUTURE}, {"valid_from": PAST, "valid_to": "2001-01-01T00:00:00Z"}]
)
def test_attach_outside_the_validity_range_is_409(api: Api, window: dict[str, str]) -> None:
    shop = Shop(api, "A", **window)
    shop.refused("attach", 409, "validity", code="A", **shop.who(ANN))
    shop.refused("attach", 409, "validity", **shop.who(ANN))
    assert shop.get("A")["is_attached"] is False


def test_attach_inside_the_validity_range_works(api: Api) -> None:
    shop = Shop(api, "A", valid_from=PAST, valid_to=FUTURE)
    assert shop.attach(ANN) == "A"


def test_activation_stays_allowed_after_the_validity_range_ends(api: Api) -> None:
    shop = Shop(api, "A", "B", valid_to=FUTURE)
    shop.attach(ANN, "A")
    shop.attach(BOB, "B")
    shop.program_update(valid_to=PAST)
    shop.refused("attach", 409, "validity", **shop.who(CAROL))
    shop.activate("A")
    shop.ok("update", code="B", activated=True)
    assert shop.get("A")["is_activated"] is True
    assert shop.get("B")["is_activated"] is True


# --- detach (8.5.7) ----------------------------------------------------------------------------------------------


def test_detach_needs_a_code(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.refused("detach", 400, "code", **shop.who(ANN))
    assert shop.get("A")["is_attached"] is True


def test_detach_frees_the_code_for_the_pool(api: Api) -> None:
    shop = Shop(api, "A", "B")
    shop.attach(ANN, "A")
    assert shop.ok("detach", code="A", **shop.who(ANN)) is None
    data = shop.get("A")
    assert (data["is_attached"], data["attached"]) == (False, "")
    assert not {"profile_id", "database_id"} & set(data)
    assert shop.attach(BOB) == "A"  # free again, and still the oldest
    assert shop.get("A")["profile_id"] == shop.profile_ids[BOB]


def test_detach_from_another_profile_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.refused("detach", 409, "another profile", code="A", **shop.who(BOB))
    assert shop.get("A")["profile_id"] == shop.profile_ids[ANN]


def test_detach_free_code_is_409(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("detach", 409, "not attached", code="A", **shop.who(ANN))


def test_detach_code_bound_to_several_profiles_is_409(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.attach(BOB, "U")
    shop.refused("detach", 409, "several profiles", code="U", **shop.who(ANN))
    assert shop.get("U")["attached_count"] == 2


def test_detach_multiple_usage_code_bound_to_one_profile(api: Api) -> None:
    shop = Shop(api, "U", multiple_usage=True)
    shop.attach(ANN, "U")
    shop.refused("detach", 409, code="U", **shop.who(BOB))
    shop.ok("detach", code="U", **shop.who(ANN))
    assert shop.get("U")["attached_count"] == 0


def test_detach_activated_code_is_409(api: Api) -> None:
    shop = Shop(api, "A", "B")
    shop.attach(ANN, "A")
    shop.activate("A")
    before = shop.get("A")
    shop.refused("detach", 409, "activated", code="A", **shop.who(ANN))
    assert shop.get("A") == before
    assert shop.attach(BOB) == "B"  # the redeemed code never went back into the pool


def test_detach_unknown_code_is_404(api: Api) -> None:
    shop = Shop(api, "A")
    shop.refused("detach", 404, code="MISSING", **shop.who(ANN))
    shop.refused("detach", 404, "Profile not found", code="A", **shop.who("nobody@example.org"))


# --- export_all (8.5.9, 3.7) -------------------------------------------------------------------------------------


def test_export_lists_codes_in_creation_order_with_timestamps_only_when_set(api: Api) -> None:
    shop = Shop(api, "Z-FREE", "A-BOUND", "M-USED")
    shop.import_codes("B-LATER")
    shop.attach(ANN, "A-BOUND")
    shop.attach(BOB, "M-USED")
    shop.activate("M-USED")
    bound, used = shop.get("A-BOUND"), shop.get("M-USED")
    assert shop.export() == [
        {"code": "Z-FREE"},
        {"code": "A-BOUND", "attached": bound["attached"]},
        {"code": "M-USED", "attached": used["attached"], "activated": used["activated"]},
        {"code": "B-LATER"},
    ]


def test_export_shows_expired_codes_without_extra_fields(api: Api) -> None:
    shop = Shop(api, "A")
    shop.expire("A", PAST)
    assert shop.export() == [{"code": "A"}]


def test_export_forgets_a_detached_binding(api: Api) -> None:
    shop = Shop(api, "A")
    shop.attach(ANN, "A")
    shop.ok("detach", code="A", **shop.who(ANN))
    assert shop.export() == [{"code": "A"}]


def test_export_of_an_empty_program_is_an_empty_list(api: Api) -> None:
    shop = Shop(api)
    assert shop.export() == []
    Shop(api, "ELSEWHERE")
    assert shop.export() == []  # another program's codes are not listed


def test_export_of_an_unknown_program_is_404(api: Api) -> None:
    body = api.call("promocodes/export_all", loyalty_id=9999)
    assert (body["error"], body["data"]) == (404, None)
