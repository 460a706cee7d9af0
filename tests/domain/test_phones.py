"""Phones compare by their digits alone (docs/api.md#profile-matching)."""

import pytest

from promocodes.domain.phones import phone_digits
from promocodes.errors import BadRequest


@pytest.mark.parametrize(
    "raw",
    ["+7 (900) 000-00-00", "79000000000", "+79000000000", "7.900.000.00.00", " 7 900 000 00 00 "],
)
def test_every_spelling_of_one_number_gives_the_same_digits(raw: str) -> None:
    assert phone_digits(raw) == "79000000000"


def test_different_numbers_stay_different() -> None:
    assert phone_digits("+7 900 000-00-01") != phone_digits("+7 900 000-00-00")
    assert phone_digits("+1 555 0100") == "15550100"


@pytest.mark.parametrize("raw", ["", "   ", "+", "phone", "(-)"])
def test_a_value_without_digits_is_refused(raw: str) -> None:
    with pytest.raises(BadRequest, match="no digits"):
        phone_digits(raw)


def test_only_ascii_digits_count() -> None:
    # Arabic-Indic digits are not phone digits here: only 0-9 survive.
    assert phone_digits("+7 ٩٠٠ 900") == "7900"
    with pytest.raises(BadRequest):
        phone_digits("٩٠٠")
