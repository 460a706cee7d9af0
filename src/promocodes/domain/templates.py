"""Generation templates (docs/api.md#program-settings): ``#`` a digit, ``@`` an upper-case letter, ``?`` a letter
or digit, ``\\`` escapes the next character, everything else is literal.

Besides making codes (one, or many at once for docs/api.md#generate), a template says which codes it could have
made (:meth:`Template.key_pattern`), so that the key-space guard can count the codes a program already holds that
a new draw might collide with.
"""

from __future__ import annotations

import math
import re
import secrets
import string
from typing import NamedTuple

from promocodes.domain.codes import MAX_CODE_LENGTH, WHITE_SPACE
from promocodes.errors import BadRequest

_ALPHABETS = {
    "#": string.digits,
    "@": string.ascii_uppercase,
    "?": string.ascii_letters + string.digits,
}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Generated codes are assembled as lines of one buffer (Template.generate_many); templates never hold a control
# character, so this one never appears inside a code.
_SEPARATOR = "\n"


class _Source(NamedTuple):
    """How to turn random bytes into characters of one alphabet without bias (see :func:`_random_characters`):
    ``table`` maps a byte to ``alphabet[byte % len(alphabet)]``; ``rejected`` are the bytes dropped first."""

    table: bytes
    rejected: bytes
    kept: int  # how many of the 256 byte values are kept


def _source(alphabet: str) -> _Source:
    size = len(alphabet)
    kept = 256 - 256 % size  # the largest multiple of the alphabet's size that fits in a byte
    table = bytes(ord(alphabet[value % size]) for value in range(256))
    return _Source(table, bytes(range(kept, 256)), kept)


_SOURCES = {alphabet: _source(alphabet) for alphabet in _ALPHABETS.values()}


def _random_characters(alphabet: str, count: int) -> bytes:
    """``count`` characters of ``alphabet`` (ASCII), each drawn independently and uniformly from a cryptographic
    source, in a few C-level calls rather than a Python call per character.

    Why uniform: every byte of ``secrets.token_bytes`` is uniform over 0 to 255 and independent of the others. The
    bytes at or above ``kept`` (the largest multiple of the alphabet's size m not above 256) are deleted; a kept
    byte is then uniform over 0 … kept-1, and ``byte % m`` takes each of the m values for exactly kept/m of
    them, so each character has probability 1/m. Whether a byte is kept depends on that byte alone, so the kept
    bytes stay independent. (Taking ``byte % m`` of every byte would favour the first 256 % m characters: for the
    62 letters and digits of ``?``, 'A' to 'H' would come a quarter more often than the others.) The shortfall of
    a draw — about 3 % of the bytes for ``?``, 9 % for ``@`` — is drawn again.
    """
    source = _SOURCES[alphabet]
    chunks: list[bytes] = []
    have = 0
    while have < count:
        wanted = count - have
        raw = secrets.token_bytes(wanted * 256 // source.kept + 64)
        chunk = raw.translate(source.table, source.rejected)  # delete the rejected bytes, then map the rest
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)[:count]


class KeyPattern(NamedTuple):
    """Which code keys (docs/api.md#values: the code itself, or its case fold in a case-insensitive program) a
    template can make, in the two forms the databases read. Character classes are spelled out in full (no ranges),
    so that no collation can widen them."""

    length: int  # characters of every such key
    regex: str  # anchored; the same text for Python's ``re`` and PostgreSQL's ``~``
    glob: str  # for SQLite's ``GLOB`` (case-sensitive, whole-string)


def _regex_literal(char: str) -> str:
    # A backslash before an ASCII character that is not a letter or digit makes it literal in Python's `re` and in
    # PostgreSQL's advanced regular expressions alike; other characters are literal as they are.
    return "\\" + char if char.isascii() and not char.isalnum() else char


def _glob_literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


class Template:
    """A parsed template: a list of parts, each a literal string or an alphabet to draw one character from."""

    def __init__(self, pattern: str) -> None:
        if _CONTROL.search(pattern):
            # A code holding one would be refused by every look-up (docs/api.md#values).
            raise BadRequest("Template contains a control character")
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
        return self.key_space_in(case_sensitive=True)

    def key_space_in(self, case_sensitive: bool) -> int:
        """How many distinct codes the template can produce in a program of that case sensitivity: in a
        case-insensitive one, ``?`` makes 36 distinct codes, not 62 (``a`` and ``A`` are the same code)."""
        return math.prod(
            len(self._key_class(text, case_sensitive)) for is_placeholder, text in self._parts if is_placeholder
        )

    def generate(self) -> str:
        """One code, drawn from a cryptographic random source."""
        return "".join(secrets.choice(text) if is_placeholder else text for is_placeholder, text in self._parts)

    def generate_many(self, count: int) -> list[str]:
        """``count`` codes, each as :meth:`generate` would draw it (they may repeat: the caller keeps the new ones).

        Built column by column, without a Python call per character or per code: the codes are the lines of one
        UTF-8 buffer, every line the same number of bytes (placeholders are ASCII, literals are the same in every
        code). Each byte column is filled by one extended-slice assignment — a literal's byte repeated, or
        ``count`` random characters (:func:`_random_characters`, one batch per alphabet) — then the buffer is
        decoded and split into lines.
        """
        if count <= 0:
            return []
        columns: list[bytes | str] = []  # a literal byte, or the alphabet of a placeholder
        for is_placeholder, text in self._parts:
            if is_placeholder:
                columns.append(text)
            else:
                columns.extend(bytes([byte]) for byte in text.encode())
        stride = len(columns) + 1
        buffer = bytearray(count * stride)
        buffer[len(columns) :: stride] = _SEPARATOR.encode() * count
        by_alphabet: dict[str, list[int]] = {}
        for index, column in enumerate(columns):
            if isinstance(column, bytes):
                buffer[index::stride] = column * count
            else:
                by_alphabet.setdefault(column, []).append(index)
        for alphabet, indexes in by_alphabet.items():
            characters = memoryview(_random_characters(alphabet, count * len(indexes)))
            for number, index in enumerate(indexes):
                buffer[index::stride] = characters[number * count : (number + 1) * count]
        codes = buffer.decode("utf-8").split(_SEPARATOR)
        codes.pop()  # the empty text after the last separator
        return codes

    def key_pattern(self, case_sensitive: bool) -> KeyPattern:
        """The keys this template can make in a program of that case sensitivity. A case-insensitive program keys
        a code by its case fold (docs/api.md#values), so the pattern is folded too: ``@`` matches ``a`` to ``z``, and a
        literal ``ß`` matches ``ss``. Folding is character by character, so the fold of a code is the fold of
        its parts, in order."""
        length = 0
        regex: list[str] = []
        glob: list[str] = []
        for is_placeholder, text in self._parts:
            if is_placeholder:
                members = "".join(self._key_class(text, case_sensitive))
                regex.append(f"[{members}]")
                glob.append(f"[{members}]")
                length += 1
            else:
                folded = text if case_sensitive else text.casefold()
                regex.extend(_regex_literal(char) for char in folded)
                glob.extend(_glob_literal(char) for char in folded)
                length += len(folded)
        return KeyPattern(length, "^" + "".join(regex) + "$", "".join(glob))

    def makes_key(self, key: str, case_sensitive: bool) -> bool:
        """Whether the template can make a code with this key (what the store's SQL asks of each stored key)."""
        pattern = self.key_pattern(case_sensitive)
        return len(key) == pattern.length and re.fullmatch(pattern.regex[1:-1], key) is not None

    @staticmethod
    def _key_class(alphabet: str, case_sensitive: bool) -> list[str]:
        """The distinct key characters a placeholder's alphabet makes, sorted."""
        return sorted(set(alphabet if case_sensitive else alphabet.casefold()))
