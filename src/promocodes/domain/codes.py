"""What a promo code is, and the ONE function every path uses to compare codes (docs/api.md#values)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from promocodes.errors import BadRequest

MAX_CODE_LENGTH = 255
# Unicode category Cc is exactly these two ranges; one regex search runs in C, a per-character category lookup in
# Python would cost seconds on the event loop for an import of a million codes.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Unicode White_Space. Python's str.strip() would also strip U+001C-U+001F: those are control characters to
# refuse, not white space to strip.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def clean_code(raw: str) -> str:
    """The code as stored and shown: surrounding white space stripped, 1 to 255 characters, no control characters.

    Raises :class:`BadRequest` naming what is wrong; import turns it into a per-item 400.
    """
    code = raw.strip(WHITE_SPACE)
    if not code:
        raise BadRequest("Promo code is empty")
    if len(code) > MAX_CODE_LENGTH:
        raise BadRequest(f"Promo code is longer than {MAX_CODE_LENGTH} characters")
    if _CONTROL.search(code):
        raise BadRequest("Promo code contains a control character")
    return code


def code_key(code: str, case_sensitive: bool) -> str:
    """The comparison key of a cleaned code inside its program.

    Case-insensitive programs compare through Unicode case folding (``"STRASSE"`` and ``"straße"`` are the same
    code); case-sensitive programs compare exactly. Import, get, activate, update, attach and detach all look codes
    up by this key, so a code can never be stored under one spelling and redeemed under another.
    """
    return code if case_sensitive else code.casefold()


class CodeColumn:
    """Where the code is in the rows of a codes file (``promocodes import``, the console's upload): a CSV whose
    first row is a header naming a ``code`` column, a CSV without a header (its first column), or plain lines.
    Fed the file's CSV rows in order, one at a time, so that a file is read as it streams in."""

    def __init__(self) -> None:
        self.column = 0
        self.rows = 0

    def code(self, row: list[str]) -> str | None:
        """The code in this row, or None for a blank row or the header."""
        number, self.rows = self.rows, self.rows + 1
        if not row or not any(cell.strip() for cell in row):
            return None
        if number == 0:
            header = [cell.strip().lower() for cell in row]
            if "code" in header:
                self.column = header.index("code")
                return None
        if self.column < len(row) and row[self.column].strip():
            return row[self.column]
        return None

    def codes(self, rows: Iterable[list[str]]) -> Iterator[str]:
        """The codes of many rows, for a reader that needs no row numbers (``promocodes import``): the first row
        through :meth:`code` (it may be the header), the rest in one generator expression, so that the loop a
        million-line file runs stays in C as far as it can."""
        rows = iter(rows)
        if self.rows == 0:
            for row in rows:
                first = self.code(row)
                if first is not None:
                    yield first
                break
        column = self.column
        yield from (row[column] for row in rows if len(row) > column and row[column].strip())


def clean_codes(raws: Sequence[str]) -> list[str | BadRequest]:
    """:func:`clean_code` for a whole import batch, item by item: the cleaned code, or the error refusing it.

    Judged as a batch first — every item stripped, then ONE control-character search over all of them joined and
    the shortest and longest length taken in C — so that a batch of valid codes (the usual one) costs no Python
    call per code; only a batch holding an invalid item is judged again code by code, to say which and why.
    """
    stripped = [raw.strip(WHITE_SPACE) for raw in raws]
    if not stripped:
        return []
    lengths = list(map(len, stripped))
    if min(lengths) > 0 and max(lengths) <= MAX_CODE_LENGTH and not _CONTROL.search("".join(stripped)):
        return list(stripped)
    return [_cleaned_or_error(raw) for raw in raws]


def _cleaned_or_error(raw: str) -> str | BadRequest:
    try:
        return clean_code(raw)
    except BadRequest as error:
        return error


def code_keys(codes: Sequence[str], case_sensitive: bool) -> list[str]:
    """:func:`code_key` of each cleaned code, in one pass.

    Case folding is context-free (each character folds alone), so folding the codes joined by a NUL and splitting
    there again gives each code's own key: a cleaned code never holds a NUL (a control character), and folding
    never makes one. Checked by the count, all the same.
    """
    if case_sensitive:
        return list(codes)
    keys = "\x00".join(codes).casefold().split("\x00")
    if len(keys) != len(codes):  # a code holding a NUL, never cleaned: fold code by code instead
        return [code.casefold() for code in codes]
    return keys
