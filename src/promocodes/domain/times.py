"""Time in one form: aware UTC datetimes inside, RFC 3339 with ``Z`` on the wire, microseconds in storage."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from promocodes.errors import BadRequest

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 section 5.6: full-date "T" full-time; the offset is checked apart to name its absence.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_rfc3339(moment: datetime | None) -> str:
    """``2025-03-01T09:30:00Z`` (whole seconds, as Altcraft shows them); ``""`` for a moment never set."""
    if moment is None:
        return ""
    # isoformat, not strftime("%Y"): the latter writes year 1 as "1", which no RFC 3339 parser reads back.
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_rfc3339(text: str, field: str) -> datetime:
    """Parse an RFC 3339 date-time; any offset is accepted and turned into UTC. A date-time without an offset
    is refused, because guessing its zone would silently move a code's expiry by hours."""
    candidate = text.strip()
    if not _RFC3339.fullmatch(candidate):
        # datetime.fromisoformat alone would also take ISO 8601 forms RFC 3339 does not allow (20250301T0930Z).
        raise BadRequest(f"Field `{field}` is not an RFC 3339 date-time: {text!r}")
    if candidate.endswith(("z", "Z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise BadRequest(f"Field `{field}` is not an RFC 3339 date-time: {text!r}") from None
    if "T" not in candidate.upper() or moment.tzinfo is None:
        raise BadRequest(f"Field `{field}` must be an RFC 3339 date-time with an offset, e.g. 2025-03-01T09:30:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-14:00 is a valid string whose UTC moment lies past year 9999.
        raise BadRequest(f"Field `{field}` lies outside the years 1 to 9999 once converted to UTC: {text!r}") from None


def to_micros(moment: datetime) -> int:
    """Storage form: whole microseconds since the Unix epoch, the same integer on both adapters."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int | None) -> datetime | None:
    if value is None:
        return None
    # Arithmetic rather than fromtimestamp(), which some platforms refuse before 1970 or past 3000.
    return _EPOCH + timedelta(microseconds=value)
