"""Phone numbers compare by their digits alone (docs/api.md#profile-matching)."""

from __future__ import annotations

from promocodes.errors import BadRequest


def phone_digits(raw: str) -> str:
    """``+7 (900) 000-00-00`` → ``79000000000``. A value without any digit is refused."""
    digits = "".join(char for char in raw if char.isascii() and char.isdigit())
    if not digits:
        raise BadRequest(f"Phone {raw!r} has no digits")
    return digits
