"""Request-body decoding on its own, without a server or a database: what valid bodies become, that big bodies
decode in linear time, that nesting is bounded, and that no bytes whatever raise anything but BadRequest."""

from __future__ import annotations

import codecs
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promocodes.errors import BadRequest
from promocodes.http import decoding
from promocodes.http.decoding import MAX_NESTING, decode_body, wrap_arrays

KINDS = ("json", "xml", "form")

#: the longest error text a refusal may carry: a sentence plus a capped quote, never a piece of a big body
LONGEST_TEXT = 300


def refusal(body: bytes, kind: str) -> str:
    """The text of the BadRequest that decoding ``body`` must raise."""
    with pytest.raises(BadRequest) as caught:
        decode_body(body, kind)
    assert len(caught.value.text) <= LONGEST_TEXT, caught.value.text[:LONGEST_TEXT]
    return caught.value.text


# --- valid bodies ----------------------------------------------------------------------------------------------


def test_xml_leaves_are_stripped_text_and_a_repeated_element_is_a_list() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<xml>\n  <loyalty_id> 7 </loyalty_id>\n'
        b"  <codes>A-1</codes>\n  <codes><![CDATA[B&2]]></codes>\n  <codes>C&amp;3</codes>\n"
        b"  <profile><email> a@b.c </email><tag>x</tag><tag>y</tag></profile>\n  <empty/>\n</xml>\n"
    )
    assert decode_body(body, "xml") == {
        "loyalty_id": "7",
        "codes": ["A-1", "B&2", "C&3"],
        "profile": {"email": "a@b.c", "tag": ["x", "y"]},
        "empty": "",
    }


def test_xml_repeats_of_mappings_and_interleaved_repeats_make_lists() -> None:
    body = b"<xml><item><a>1</a></item><codes>A</codes><item><a>2</a></item><codes>B</codes></xml>"
    assert decode_body(body, "xml") == {"item": [{"a": "1"}, {"a": "2"}], "codes": ["A", "B"]}


@pytest.mark.parametrize(
    ("declared", "name"), [("UTF-8", "Zoë"), ("utf-8", "Zoë"), ("utf8", "Zoë"), ("US-ASCII", "Zoe")]
)
def test_xml_declaring_utf8_or_ascii_is_accepted(declared: str, name: str) -> None:
    body = f"<?xml version='1.0' encoding='{declared}'?><xml><name>{name}</name></xml>".encode()
    assert decode_body(body, "xml") == {"name": name}


def test_xml_with_a_utf8_byte_order_mark_is_accepted() -> None:
    assert decode_body(codecs.BOM_UTF8 + b"<xml><code>A-1</code></xml>", "xml") == {"code": "A-1"}


def test_xml_root_without_children_is_an_empty_mapping() -> None:
    assert decode_body(b"<xml>text</xml>", "xml") == {}


def test_xml_root_must_be_xml() -> None:
    assert "<xml>" in refusal(b"<request><code>A</code></request>", "xml")


def test_xml_with_a_doctype_is_refused() -> None:
    assert "DOCTYPE" in refusal(b"<!DOCTYPE xml><xml><code>A</code></xml>", "xml")


def test_form_repeats_and_php_array_names_make_lists() -> None:
    body = b"loyalty_id=7&codes%5B%5D=A-1&codes[]=B-2&codes=C+3&note=&name=Zo%C3%AB"
    assert decode_body(body, "form") == {"loyalty_id": "7", "codes": ["A-1", "B-2", "C 3"], "note": "", "name": "Zoë"}


def test_json_object_is_returned_as_is() -> None:
    body = b'{"codes": ["A"], "n": 1, "p": {"x": null}}'
    assert decode_body(body, "json") == {"codes": ["A"], "n": 1, "p": {"x": None}}


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_body_is_an_empty_mapping(kind: str) -> None:
    assert decode_body(b" \r\n\t", kind) == {}


def test_wrap_arrays_makes_a_lone_value_a_list() -> None:
    assert wrap_arrays({"codes": "A", "code": "B"}, frozenset({"codes", "missing"})) == {"codes": ["A"], "code": "B"}


# --- linear time: 5 MB bodies (each took from 20 s to minutes when repeats rebuilt their list) ------------------


@pytest.mark.timeout(20)
def test_an_xml_body_of_320k_repeated_elements_decodes() -> None:
    count = 320_000
    body = "<xml><loyalty_id>7</loyalty_id>{}</xml>".format("".join(f"<codes>{i}</codes>" for i in range(count)))
    params = decode_body(body.encode(), "xml")
    assert params["loyalty_id"] == "7"
    assert params["codes"] == [str(i) for i in range(count)]


@pytest.mark.timeout(20)
def test_a_form_body_of_200k_pairs_decodes() -> None:
    count = 200_000
    body = "loyalty_id=7" + "".join(f"&codes%5B%5D=C-{i}" for i in range(count))
    params = decode_body(body.encode(), "form")
    assert params["loyalty_id"] == "7"
    assert params["codes"] == [f"C-{i}" for i in range(count)]


@pytest.mark.timeout(20)
def test_a_big_json_body_decodes() -> None:
    count = 320_000
    body = json.dumps({"loyalty_id": 7, "codes": [f"C-{i}" for i in range(count)], "deep": {"list": [[1], [2]]}})
    params = decode_body(body.encode(), "json")
    assert params["loyalty_id"] == 7
    assert params["codes"] == [f"C-{i}" for i in range(count)]
    assert params["deep"] == {"list": [[1], [2]]}


# --- nesting: the outermost object, array or <xml> is level 1 -------------------------------------------------


def json_objects(levels: int) -> bytes:
    """``levels`` nested objects, the innermost holding ``"leaf": 1``."""
    return ('{"a":' * (levels - 1) + '{"leaf":1}' + "}" * (levels - 1)).encode()


def json_arrays(levels: int) -> bytes:
    """An object holding ``levels - 1`` nested arrays, the innermost holding ``1``."""
    return ('{"a":' + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "}").encode()


def xml_elements(levels: int) -> bytes:
    """``<xml>`` and ``levels - 1`` nested elements inside it, the innermost holding text."""
    return ("<xml>" + "<a>" * (levels - 1) + "leaf" + "</a>" * (levels - 1) + "</xml>").encode()


NESTED = {"json-objects": (json_objects, "json"), "json-arrays": (json_arrays, "json"), "xml": (xml_elements, "xml")}


def innermost(value: Any) -> Any:
    """The value at the bottom of a chain of single-entry containers, and how many containers lead there."""
    levels = 0
    while isinstance(value, dict | list):
        levels += 1
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return levels, value


@pytest.mark.parametrize("shape", NESTED)
def test_nesting_of_exactly_the_limit_is_accepted(shape: str) -> None:
    build, kind = NESTED[shape]
    levels, leaf = innermost(decode_body(build(MAX_NESTING), kind))
    assert MAX_NESTING == 64
    # XML leaves are text, not a level; a JSON leaf object is one
    assert (levels, leaf) == {"json-objects": (64, 1), "json-arrays": (64, 1), "xml": (63, "leaf")}[shape]


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 1_000, 100_000])
@pytest.mark.parametrize("shape", NESTED)
def test_nesting_past_the_limit_is_refused(shape: str, levels: int) -> None:
    build, kind = NESTED[shape]
    assert "nested deeper than 64 levels" in refusal(build(levels), kind)


@pytest.mark.timeout(20)
def test_five_megabytes_of_open_xml_elements_are_refused_at_the_limit() -> None:
    assert "nested deeper than 64 levels" in refusal(b"<xml>" + b"<a>" * 1_700_000, "xml")


# --- encodings and stray bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", ["bogus", "ISO-8859-1", "UTF-16", "x" * 5000])
def test_xml_declaring_another_encoding_is_refused(declared: str) -> None:
    body = f"<?xml version='1.0' encoding='{declared}'?><xml><code>A</code></xml>".encode()
    assert "XML bodies must be UTF-8" in refusal(body, "xml")


SAMPLES = {
    "json": '{"code": "Zoë"}',
    "xml": "<xml><code>Zoë</code></xml>",
    "form": "code=Zoë",
}


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("kind", KINDS)
def test_utf16_and_utf32_bodies_are_refused(kind: str, codec: str) -> None:
    refusal(SAMPLES[kind].encode(codec), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_a_nul_byte_is_refused(kind: str) -> None:
    body = SAMPLES[kind].encode().replace(b"Zo", b"Z\x00o")
    assert "NUL" in refusal(body, kind)


@pytest.mark.parametrize("stray", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"])
@pytest.mark.parametrize("kind", KINDS)
def test_invalid_utf8_is_refused(kind: str, stray: bytes) -> None:
    assert "UTF-8" in refusal(SAMPLES[kind].encode().replace("ë".encode(), stray), kind)


def test_a_percent_escape_that_is_not_utf8_is_refused() -> None:
    assert "Malformed form body" in refusal(b"code=Zo%EB", "form")


@pytest.mark.parametrize("body", [b"code", b"code=A&&n=1", b"code=A&", b"&code=A"])
def test_a_form_field_without_a_value_separator_is_refused(body: bytes) -> None:
    assert "Malformed form body" in refusal(body, "form")


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("form", b"x" * 1_000_000),
        ("form", "\U0010ffff\x01".encode() * 1_000),
        ("xml", b"<" + b"r" * 1_000_000 + b"/>"),
        ("xml", b"<?xml version='1.0' encoding='" + "\U0010ffff".encode() * 150 + b"'?><xml/>"),
        ("json", b'{"a": "' + b"x" * 1_000_000),
    ],
    ids=["form-field", "form-field-unprintable", "xml-root-name", "xml-encoding-name", "json-unterminated"],
)
def test_a_refusal_never_quotes_a_big_body(kind: str, body: bytes) -> None:
    refusal(body, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unforeseen_decoder_failure_is_a_bad_request_logged_in_one_line(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> dict[str, Any]:
        raise KeyError("x" * 10_000)

    monkeypatch.setattr(decoding, f"_decode_{kind}", broken)
    with caplog.at_level(logging.WARNING, logger="promocodes"):
        assert refusal(SAMPLES[kind].encode(), kind).startswith("Malformed")
    assert [(record.getMessage(), record.exc_info) for record in caplog.records] == [
        (f"Body refused after an unforeseen KeyError from the {kind} decoder", None)
    ]


# --- any bytes at all -----------------------------------------------------------------------------------------

MARKUP = "<>/?!=\"'&;#[]{}:,%+-.0123456789 \t\n\r\\xmlabcodesëЖ\u2028\ufeff\x00\x7f"
OPENINGS = [b"", b"<xml>", b"<?xml version='1.0'?>", b"{", b'{"a":', b"[", b"codes=", b"\xef\xbb\xbf", b"\xff\xfe"]


NESTING_UNITS = [b"[", b'{"a":', b"<a>"]


def bodies() -> st.SearchStrategy[bytes]:
    """Raw bytes; text built from the characters the three grammars care about behind a plausible opening; and
    deep nesting followed by such text."""
    markup = st.builds(
        lambda opening, text: opening + text.encode(),
        st.sampled_from(OPENINGS),
        st.text(alphabet=MARKUP, max_size=200),
    )
    nested = st.builds(
        lambda opening, unit, levels, tail: opening + unit * levels + tail,
        st.sampled_from(OPENINGS),
        st.sampled_from(NESTING_UNITS),
        st.integers(min_value=1, max_value=5_000),
        markup,
    )
    return st.one_of(st.binary(max_size=300), markup, nested)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None, database=None)
@given(body=bodies())
def test_any_bytes_decode_to_a_mapping_or_a_bad_request(kind: str, body: bytes) -> None:
    try:
        params = decode_body(body, kind)
    except BadRequest as error:
        assert 0 < len(error.text) <= LONGEST_TEXT
    else:
        assert isinstance(params, dict)
