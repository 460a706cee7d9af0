"""Generation templates (docs/api.md#program-settings): placeholders, escapes, key space and the 1/1000 batch rule."""

import re

import pytest

from promocodes.domain.templates import Template
from promocodes.errors import BadRequest


def pattern_of(template: str) -> re.Pattern[str]:
    """The regular expression every code of ``template`` must match (written independently of the parser)."""
    parts: list[str] = []
    chars = iter(template)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars)))
        elif char == "#":
            parts.append("[0-9]")
        elif char == "@":
            parts.append("[A-Z]")
        elif char == "?":
            parts.append("[A-Za-z0-9]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts))


@pytest.mark.parametrize(
    ("template", "key_space"),
    [
        ("#", 10),
        ("@", 26),
        ("?", 62),
        ("SPRING-####", 10_000),
        ("@@-##", 26 * 26 * 100),
        ("??????", 62**6),
        ("A#B@C?", 10 * 26 * 62),
        (r"\#\@\?#", 10),  # escaped placeholders are literal
        (r"\\#", 10),  # an escaped backslash is literal
    ],
)
def test_key_space_multiplies_the_placeholder_alphabets(template: str, key_space: int) -> None:
    assert Template(template).key_space == key_space


@pytest.mark.parametrize("template", ["SPRING-####", "@@@-###", "??????", "X?#@Y", r"\#\@\?-##", r"a\\b-##", "Ж-##"])
def test_generated_codes_match_the_template(template: str) -> None:
    expected = pattern_of(template)
    parsed = Template(template)
    for _ in range(200):
        assert expected.fullmatch(parsed.generate())


def test_escapes_produce_the_literal_character() -> None:
    assert re.fullmatch(r"#@\?-[0-9]", Template(r"\#\@\?-#").generate())
    assert re.fullmatch(r"a\\b[0-9]", Template(r"a\\b#").generate())


def test_placeholders_draw_from_their_whole_alphabet() -> None:
    digits = {Template("#").generate() for _ in range(2000)}
    letters = {Template("@").generate() for _ in range(4000)}
    assert digits == set("0123456789")
    assert letters == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_generated_codes_vary() -> None:
    codes = {Template("??????????").generate() for _ in range(100)}
    assert len(codes) == 100


@pytest.mark.parametrize("template", ["", "SPRING", r"\#\@\?", "A-B-C"])
def test_template_without_placeholder_is_refused(template: str) -> None:
    with pytest.raises(BadRequest, match="placeholder"):
        Template(template)


@pytest.mark.parametrize("template", ["##\\", "\\"])
def test_template_with_a_lone_trailing_escape_is_refused(template: str) -> None:
    with pytest.raises(BadRequest, match="escape"):
        Template(template)


def test_pattern_is_kept() -> None:
    assert Template("SPRING-####").pattern == "SPRING-####"


def test_a_template_of_255_characters_is_the_longest_allowed() -> None:
    assert len(Template("#" * 255).generate()) == 255
    assert len(Template("\\A" * 254 + "#").generate()) == 255  # an escape is one character of the code


@pytest.mark.parametrize("template", ["#" * 256, "PROMO-" + "?" * 250, "#" * 1000])
def test_a_template_whose_codes_exceed_255_characters_is_refused(template: str) -> None:
    """A 1,000-character template used to store a code that no look-up could ever read or redeem."""
    with pytest.raises(BadRequest, match="at most 255"):
        Template(template)


@pytest.mark.parametrize("template", [" ####", "#### ", "\\ ####"])
def test_a_template_starting_or_ending_with_white_space_is_refused(template: str) -> None:
    with pytest.raises(BadRequest, match="white space"):
        Template(template)
