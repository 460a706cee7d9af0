"""Generation templates (docs/api.md#program-settings): placeholders, escapes, key space and the 1/1000 batch rule."""

import re
import string

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


# --- generating many at once (docs/api.md#generate) -------------------------------------------------------------


@pytest.mark.parametrize(
    "template", ["SPRING-####", "@@@-###", "??????", "X?#@Y", r"\#\@\?-##", r"a\\b-##", "Ж-##", "ß?€@", "#"]
)
def test_generate_many_makes_codes_of_the_template(template: str) -> None:
    expected = pattern_of(template)
    codes = Template(template).generate_many(500)
    assert len(codes) == 500
    assert all(expected.fullmatch(code) for code in codes), [code for code in codes if not expected.fullmatch(code)]


@pytest.mark.parametrize("count", [0, 1, 2, 63, 64, 65, 1000, 50_001])
def test_generate_many_makes_exactly_the_count(count: int) -> None:
    codes = Template("AB-?#@").generate_many(count)
    assert len(codes) == count
    assert all(len(code) == 6 for code in codes)


def test_generate_many_draws_every_character_of_each_alphabet_and_nothing_else() -> None:
    """Membership, not uniformity: every character of the alphabet turns up, and no other."""
    codes = Template("#@?").generate_many(20_000)
    assert {code[0] for code in codes} == set(string.digits)
    assert {code[1] for code in codes} == set(string.ascii_uppercase)
    assert {code[2] for code in codes} == set(string.ascii_letters + string.digits)


def test_generate_many_draws_each_position_on_its_own() -> None:
    """Positions of one alphabet take different bytes of the draw: two of them are not copies of each other."""
    codes = Template("??????").generate_many(1000)
    assert len(set(codes)) == 1000
    assert sum(code[0] == code[1] for code in codes) < 100  # 1 in 62 by chance, not 1 in 1


def test_generate_many_keeps_escaped_placeholders_literal() -> None:
    assert all(re.fullmatch(r"#@\?-[0-9]\\", code) for code in Template(r"\#\@\?-#\\").generate_many(100))


# --- the key space in a program of either case sensitivity, and the keys a template can make ----------------------


@pytest.mark.parametrize(
    ("template", "case_sensitive", "key_space"),
    [
        ("????", True, 62**4),
        ("????", False, 36**4),  # `a` and `A` are one code there
        ("@@##", False, 26 * 26 * 100),  # upper-case letters alone lose nothing by folding
        ("SALE-#?", False, 10 * 36),
        (r"\?#", False, 10),
    ],
)
def test_key_space_in_a_program_of_each_case_sensitivity(template: str, case_sensitive: bool, key_space: int) -> None:
    assert Template(template).key_space_in(case_sensitive) == key_space


@pytest.mark.parametrize(
    ("template", "key", "makes"),
    [
        ("SALE-####", "SALE-0042", True),
        ("SALE-####", "SALE-042", False),  # too short
        ("SALE-####", "SALE-00420", False),  # too long
        ("SALE-####", "SALE-00A2", False),
        ("SALE-####", "sale-0042", False),  # literals are case-sensitive in a case-sensitive program
        ("@@", "AZ", True),
        ("@@", "Az", False),
        ("??", "z9", True),
        ("??", "-9", False),
        ("#", "٣", False),  # a digit of another script is not one of `#`'s characters
        (r"\#\@\?#", "#@?7", True),
        (r"\#\@\?#", "1A77", False),  # escaped placeholders match only themselves
        ("a.b#", "a.b1", True),
        ("a.b#", "axb1", False),  # a regex metacharacter in a literal is literal
        ("a*b#", "a*b1", True),
        ("a*b#", "axxb1", False),  # so is a glob one
        ("[#]", "[1]", True),
        ("50%_#", "50%_1", True),
        ("50%_#", "50xx1", False),  # and LIKE's
        (r"a\\#", "a\\1", True),
        ("^$#", "^$1", True),
        ("Ж-#", "Ж-1", True),
    ],
)
def test_which_keys_a_template_makes_in_a_case_sensitive_program(template: str, key: str, makes: bool) -> None:
    assert Template(template).makes_key(key, case_sensitive=True) is makes


@pytest.mark.parametrize(
    ("template", "key", "makes"),
    [
        ("SALE-@#", "sale-a1", True),  # keys are case folds: `@` matches a folded letter
        ("SALE-@#", "SALE-A1", False),  # an unfolded key is never stored in such a program
        ("??", "a9", True),
        ("STRAßE-#", "strasse-1", True),  # a literal folds as a code does, even to two characters
        ("STRAßE-#", "straße-1", False),
    ],
)
def test_which_keys_a_template_makes_in_a_case_insensitive_program(template: str, key: str, makes: bool) -> None:
    assert Template(template).makes_key(key, case_sensitive=False) is makes


@pytest.mark.parametrize("template", ["SALE-####", "ß?€@", r"a*b\?[#]", "STRAßE-??"])
@pytest.mark.parametrize("case_sensitive", [True, False])
def test_every_code_a_template_makes_has_a_key_it_matches(template: str, case_sensitive: bool) -> None:
    parsed = Template(template)
    for code in parsed.generate_many(200):
        key = code if case_sensitive else code.casefold()
        assert parsed.makes_key(key, case_sensitive), key


def test_the_key_pattern_spells_its_classes_out_and_escapes_glob_characters() -> None:
    pattern = Template(r"a*?[\?#").key_pattern(case_sensitive=True)
    letters_and_digits = string.digits + string.ascii_uppercase + string.ascii_lowercase
    assert pattern.glob == f"a[*][{letters_and_digits}][[][?][0123456789]"
    assert pattern.regex == f"^a\\*[{letters_and_digits}]\\[\\?[0123456789]$"
    assert pattern.length == 6


@pytest.mark.parametrize("template", ["A\x00#", "A\n#", "A\x85#"])
def test_a_template_with_a_control_character_is_refused(template: str) -> None:
    with pytest.raises(BadRequest, match="control character"):
        Template(template)
