"""``promocodes/generate`` (docs/api.md#generate) through the HTTP API, on both adapters: exactly ``count`` new codes
of the template or nothing, the template chosen, ``return_codes``, the key-space guard, the program's limit, the
roles, the field checks, and the three body encodings."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from promocodes.models import Role
from tests.helpers import Api
from tests.http.helpers import envelope, post, xml_root
from tests.http.shop import ANN, Shop


def codes_of(shop: Shop) -> list[str]:
    return [item["code"] for item in shop.export()]


def generated(shop: Shop, count: int, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = shop.ok("generate", count=count, **fields)
    return data


def test_generate_makes_exactly_the_count_from_the_programs_template(api: Api) -> None:
    shop = Shop(api, "OLD-1", template="SPRING-@@-####")
    data = generated(shop, 250)
    assert data == {"generated": 250, "template": "SPRING-@@-####"}  # no `codes` unless asked for
    codes = codes_of(shop)
    assert len(codes) == len(set(codes)) == 251
    assert all(re.fullmatch("SPRING-[A-Z]{2}-[0-9]{4}", code) for code in codes[1:])
    assert shop.ok("programs/get")["stats"]["total"] == 251


def test_a_template_in_the_request_wins_over_the_programs(api: Api) -> None:
    shop = Shop(api, template="SPRING-####")
    data = generated(shop, 5, template=r"X\#-????", return_codes=True)
    assert data["template"] == r"X\#-????"
    assert all(re.fullmatch("X#-[A-Za-z0-9]{4}", code) for code in data["codes"])
    assert shop.ok("programs/get")["template"] == "SPRING-####"  # the program keeps its own


def test_an_empty_template_means_the_programs(api: Api) -> None:
    shop = Shop(api, template="SPRING-####")
    assert generated(shop, 2, template="")["template"] == "SPRING-####"


def test_without_any_template_the_request_is_refused(api: Api) -> None:
    shop = Shop(api)
    shop.refused("generate", 400, "`template`", count=5)
    assert codes_of(shop) == []


@pytest.mark.parametrize(
    ("template", "text"),
    [("SPRING", "placeholder"), ("#" * 256, "at most 255"), (" ##", "white space"), ("##\\", "escape")],
)
def test_a_bad_template_is_refused(api: Api, template: str, text: str) -> None:
    shop = Shop(api, template="SPRING-####")
    shop.refused("generate", 400, text, count=5, template=template)
    assert codes_of(shop) == []


def test_return_codes_answers_the_new_codes_in_creation_order(api: Api) -> None:
    shop = Shop(api, "OLD-1", "OLD-2", template="NEW-######")
    data = generated(shop, 40, return_codes=True)
    assert data["generated"] == 40
    assert data["codes"] == codes_of(shop)[2:]
    assert len(set(data["codes"])) == 40


def test_return_codes_is_allowed_up_to_ten_thousand_codes(api: Api) -> None:
    shop = Shop(api, template="BIG-????????")
    assert len(generated(shop, 10_000, return_codes=True)["codes"]) == 10_000


def test_return_codes_with_more_than_ten_thousand_is_refused_before_anything(api: Api) -> None:
    shop = Shop(api, template="BIG-????????")
    shop.refused("generate", 400, "`return_codes`", count=10_001, return_codes=True)
    assert codes_of(shop) == []
    # A field error comes before the program is looked up (docs/api.md#order-of-checks).
    text = shop.refused("generate", 400, count=10_001, return_codes=True, loyalty_id=999_999)
    assert "return_codes" in text


@pytest.mark.parametrize("count", [0, -1, 1_000_001, "many", 1.5, None, True])
def test_a_count_outside_one_to_a_million_is_refused(api: Api, count: Any) -> None:
    shop = Shop(api, template="SPRING-########")
    shop.refused("generate", 400, "count", count=count)
    assert codes_of(shop) == []


def test_count_is_required(api: Api) -> None:
    shop = Shop(api, template="SPRING-####")
    shop.refused("generate", 400, "count")


def test_a_read_token_may_not_generate_and_a_write_token_may(api: Api) -> None:
    shop = Shop(api, template="SPRING-####")
    refused = api.call("promocodes/generate", api.token_for(Role.READ), loyalty_id=shop.loyalty_id, count=1)
    assert refused["error"] == 403
    assert codes_of(shop) == []
    allowed = api.call("promocodes/generate", api.token_for(Role.WRITE), loyalty_id=shop.loyalty_id, count=1)
    assert allowed["error"] == 0
    assert len(codes_of(shop)) == 1


def test_an_unknown_or_foreign_program_is_not_found(api: Api) -> None:
    shop = Shop(api, template="SPRING-####")
    shop.refused("generate", 404, "not found", count=1, loyalty_id=999_999)
    stranger = api.token_for(Role.ADMIN, account="other")
    foreign = api.call("promocodes/generate", stranger, loyalty_id=shop.loyalty_id, count=1)
    assert foreign["error"] == 404
    assert codes_of(shop) == []


def test_the_key_space_guard_names_both_numbers_and_writes_nothing(api: Api) -> None:
    """`SALE-####` makes 10,000 codes: a program may hold 10 of them. It holds 4 (and 2 codes of another shape,
    which do not count): 7 more make 11, over 10."""
    shop = Shop(api, "SALE-0001", "SALE-0002", "SALE-0003", "SALE-0004", "SALE-12345", "OTHER", template="SALE-####")
    text = shop.refused("generate", 400, count=7)
    assert re.search(r"\b11\b", text) and re.search(r"\b10\b", text), text
    assert "7 asked for plus 4 held" in text, text
    assert len(codes_of(shop)) == 6
    assert generated(shop, 6)["generated"] == 6  # 4 + 6 = 10 is allowed
    shop.refused("generate", 400, "thousandth", count=1)


def test_the_key_space_of_a_case_insensitive_program_counts_folded_codes(api: Api) -> None:
    """`??##` makes 62 x 62 x 100 codes, but only 36 x 36 x 100 = 129,600 distinct ones where case does not count:
    at most 129 of them in a case-insensitive program, 384 in a case-sensitive one."""
    folded = Shop(api, template="??##", case_sensitive=False)
    assert "129" in folded.refused("generate", 400, count=130)
    assert generated(folded, 129)["generated"] == 129
    exact = Shop(api, template="??##")
    assert generated(exact, 384)["generated"] == 384
    assert "384" in exact.refused("generate", 400, count=1)


def test_generated_codes_of_a_case_insensitive_program_are_found_under_any_spelling(api: Api) -> None:
    shop = Shop(api, template="GEN-??????", case_sensitive=False)
    (code,) = generated(shop, 1, return_codes=True)["codes"]
    assert shop.get(code.lower())["code"] == code
    assert shop.attach(ANN, code.upper()) == code


def test_the_codes_limit_is_checked_for_the_whole_request(api: Api) -> None:
    shop = Shop(api, "A", "B", template="SPRING-######", codes_limit=10)
    text = shop.refused("generate", 402, count=9)
    assert re.search(r"\b11\b", text) and re.search(r"\b10\b", text), text
    assert codes_of(shop) == ["A", "B"]  # nothing generated, not even the 8 there was room for
    assert generated(shop, 8)["generated"] == 8
    shop.refused("generate", 402, "limit", count=1)


def test_generated_codes_are_free_codes_of_the_pool(api: Api) -> None:
    shop = Shop(api, template="POOL-####")
    (code,) = generated(shop, 1, return_codes=True)["codes"]
    assert shop.attach(ANN) == code
    shop.activate(code)


# --- body encodings (docs/api.md#requests) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (
            "application/json",
            '{{"loyalty_id": {lid}, "count": 3, "template": "X-\\\\#-#####", "return_codes": true}}',
        ),
        (
            "application/xml",
            "<xml><loyalty_id>{lid}</loyalty_id><count>3</count><template>X-\\#-#####</template>"
            "<return_codes>true</return_codes></xml>",
        ),
        (
            "application/x-www-form-urlencoded",
            "loyalty_id={lid}&count=3&template=" + quote("X-\\#-#####") + "&return_codes=1",
        ),
    ],
    ids=["json", "xml", "form"],
)
def test_every_body_encoding_generates(api: Api, content_type: str, body: str) -> None:
    shop = Shop(api)
    answer = envelope(post(api, "promocodes/generate", body.format(lid=shop.loyalty_id), content_type=content_type))
    assert answer["error"] == 0, answer
    assert answer["data"]["template"] == "X-\\#-#####"
    assert len(answer["data"]["codes"]) == 3
    assert all(re.fullmatch("X-#-[0-9]{5}", code) for code in answer["data"]["codes"])
    assert codes_of(shop) == answer["data"]["codes"]


def test_the_xml_answer_repeats_codes(api: Api) -> None:
    shop = Shop(api, template="XML-####")
    body = f"<xml><loyalty_id>{shop.loyalty_id}</loyalty_id><count>2</count><return_codes>1</return_codes></xml>"
    root = xml_root(post(api, "promocodes/generate", body, content_type="application/xml", query="?format=xml"))
    data = root.find("data")
    assert data is not None
    assert [child.tag for child in data] == ["codes", "codes", "generated", "template"]
    assert [child.text for child in data.findall("codes")] == codes_of(shop)
    assert (data.findtext("generated"), data.findtext("template")) == ("2", "XML-####")
