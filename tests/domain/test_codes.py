"""Code normalisation (docs/api.md#values): what a code is, and the one comparison key every path uses."""

import pytest

from promocodes.domain.codes import MAX_CODE_LENGTH, CodeColumn, clean_code, clean_codes, code_key, code_keys
from promocodes.errors import BadRequest


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("SPRING-1", "SPRING-1"),
        ("  SPRING-1  ", "SPRING-1"),
        ("\tSPRING-1\n", "SPRING-1"),
        ("\u3000SPRING-1\u00a0", "SPRING-1"),  # Unicode white space is stripped too
        ("SPRING 1", "SPRING 1"),  # inner white space is part of the code
        ("x", "x"),
    ],
)
def test_clean_code_strips_surrounding_white_space_only(raw: str, cleaned: str) -> None:
    assert clean_code(raw) == cleaned


def test_clean_code_keeps_case_and_unicode() -> None:
    assert clean_code("Straße-ÄÖÜ") == "Straße-ÄÖÜ"


@pytest.mark.parametrize("raw", ["", " ", "\t\n "])
def test_clean_code_refuses_empty(raw: str) -> None:
    with pytest.raises(BadRequest, match="empty"):
        clean_code(raw)


def test_clean_code_length_is_counted_after_stripping() -> None:
    assert MAX_CODE_LENGTH == 255
    assert clean_code("A" * 255) == "A" * 255
    assert clean_code("  " + "A" * 255 + "  ") == "A" * 255
    assert clean_code("é" * 255) == "é" * 255  # characters, not bytes
    with pytest.raises(BadRequest, match="255"):
        clean_code("A" * 256)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\x1f", "\x7f", "\x80", "\x85", "\x9f"])
def test_clean_code_refuses_control_characters_inside(char: str) -> None:
    with pytest.raises(BadRequest, match="control character"):
        clean_code(f"A{char}B")


@pytest.mark.parametrize("char", ["\x20", "\xa0", "\u200b", "\u00ad", "~"])
def test_clean_code_accepts_characters_next_to_the_control_ranges(char: str) -> None:
    assert clean_code(f"A{char}B") == f"A{char}B"


@pytest.mark.parametrize("raw", ["\x00ABC", "ABC\x7f", "\x1cABC", "ABC\x1d", "\x1eABC", "ABC\x1f "])
def test_clean_code_refuses_a_control_character_that_is_not_white_space_at_the_edge(raw: str) -> None:
    # U+001C-U+001F are control characters, not Unicode white space (although Python's str.isspace() says so).
    with pytest.raises(BadRequest, match="control character"):
        clean_code(raw)


@pytest.mark.parametrize("edge", ["\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u3000"])
def test_clean_code_strips_white_space_even_when_it_is_a_control_character(edge: str) -> None:
    assert clean_code(f"{edge}ABC{edge}") == "ABC"


def test_code_key_is_exact_when_case_sensitive() -> None:
    assert code_key("Abc", True) == "Abc"
    assert code_key("abc", True) != code_key("ABC", True)
    assert code_key("straße", True) != code_key("STRASSE", True)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("abc", "ABC"),
        ("Spring-1", "sPRING-1"),
        ("straße", "STRASSE"),  # full case folding, not just lower()
        ("ΣΊΣΥΦΟΣ", "σίσυφος"),  # final sigma folds like any sigma
        ("ǅ", "ǆ"),
    ],
)
def test_code_key_folds_case_when_case_insensitive(one: str, other: str) -> None:
    assert code_key(one, False) == code_key(other, False)


def test_code_key_case_insensitive_still_tells_different_codes_apart() -> None:
    assert code_key("abc", False) != code_key("abd", False)
    assert code_key("é", False) != code_key("e", False)


# Valid and invalid items, white space to strip, case folding that changes the length (ß, İ) or depends on nothing
# around it (Σ at a word's end folds like any other Σ), a code made of a NUL.
BATCH = [
    " SPRING-1 ",
    "Straße",
    "İSTANBUL",
    "ΣΑΣ",
    "",
    "A" * 256,
    "x\x00y",
    "\u3000\u3000",
    "ok\x85",
    "\x00",
    "fine",
]


@pytest.mark.parametrize("batch", [BATCH, [code for code in BATCH if code.strip() == code and code.isprintable()]])
def test_clean_codes_judges_each_item_as_clean_code_does(batch: list[str]) -> None:
    judged = clean_codes(batch)
    assert len(judged) == len(batch)
    for raw, verdict in zip(batch, judged, strict=True):
        try:
            expected: str | BadRequest = clean_code(raw)
        except BadRequest as error:
            expected = error
        if isinstance(expected, BadRequest):
            assert isinstance(verdict, BadRequest) and verdict.text == expected.text
        else:
            assert verdict == expected


@pytest.mark.parametrize("case_sensitive", [True, False])
def test_code_keys_are_the_keys_of_each_code(case_sensitive: bool) -> None:
    codes = ["Straße", "İSTANBUL", "ΣΑΣ", "ﬃ", "MiXeD", "x\x00y", ""]
    assert code_keys(codes, case_sensitive) == [code_key(code, case_sensitive) for code in codes]
    assert code_keys([], case_sensitive) == []


@pytest.mark.parametrize(
    "rows",
    [
        [["code", "note"], ["A-1", "x"], [""], ["B-2", "y"]],
        [["note", "code"], ["x", "A-1"], ["y", ""], ["z", "B-2"]],
        [["A-1"], [], ["B-2"], ["  "]],
        [[], ["code"], ["A-1"]],
        [],
    ],
)
def test_many_rows_give_the_codes_their_rows_give_one_by_one(rows: list[list[str]]) -> None:
    one_by_one = CodeColumn()
    expected = [code for row in rows if (code := one_by_one.code(row)) is not None]
    assert list(CodeColumn().codes(rows)) == expected
