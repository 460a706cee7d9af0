"""Code normalisation (docs/api.md#values): what a code is, and the one comparison key every path uses."""

import pytest

from promocodes.domain.codes import MAX_CODE_LENGTH, clean_code, code_key
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
