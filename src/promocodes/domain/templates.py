"""Generation templates (docs/api.md#program-settings): ``#`` a digit, ``@`` an upper-case letter, ``?`` a letter
or digit, ``\\`` escapes the next character, everything else is literal."""

from __future__ import annotations

import secrets
import string

from promocodes.domain.codes import MAX_CODE_LENGTH, WHITE_SPACE
from promocodes.errors import BadRequest

_ALPHABETS = {
    "#": string.digits,
    "@": string.ascii_uppercase,
    "?": string.ascii_letters + string.digits,
}


class Template:
    """A parsed template: a list of parts, each a literal string or an alphabet to draw one character from."""

    def __init__(self, pattern: str) -> None:
        parts: list[tuple[bool, str]] = []  # (is_placeholder, literal text or alphabet)
        escaped = False
        for char in pattern:
            if escaped:
                parts.append((False, char))
                escaped = False
            elif char == "\\":
                escaped = True
            elif char in _ALPHABETS:
                parts.append((True, _ALPHABETS[char]))
            else:
                parts.append((False, char))
        if escaped:
            raise BadRequest("Template ends with a lone escape character `\\`")
        if not any(is_placeholder for is_placeholder, _ in parts):
            raise BadRequest("Template has no placeholder (`#`, `@` or `?`), so it can make only one code")
        # Every part is one character of the code. A code longer than a code may be would be stored and then be
        # unreachable: every look-up refuses it as too long.
        if len(parts) > MAX_CODE_LENGTH:
            raise BadRequest(
                f"Template makes codes of {len(parts)} characters; a promo code has at most {MAX_CODE_LENGTH}"
            )
        # Look-ups strip surrounding white space from the code asked for, so a code that starts or ends with it
        # could never be found again.
        if parts[0][1].strip(WHITE_SPACE) == "" or parts[-1][1].strip(WHITE_SPACE) == "":
            raise BadRequest("Template must not start or end with white space")
        self.pattern = pattern
        self._parts = parts

    @property
    def key_space(self) -> int:
        """How many distinct codes the template can produce."""
        size = 1
        for is_placeholder, text in self._parts:
            if is_placeholder:
                size *= len(text)
        return size

    def generate(self) -> str:
        """One code, drawn from a cryptographic random source."""
        return "".join(secrets.choice(text) if is_placeholder else text for is_placeholder, text in self._parts)
