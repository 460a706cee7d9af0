"""Times (docs/api.md#values): RFC 3339 in, RFC 3339 with ``Z`` out, UTC inside."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from promocodes.domain.times import format_rfc3339, from_micros, parse_rfc3339, to_micros, utcnow
from promocodes.errors import BadRequest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T09:30:00Z", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01t09:30:00z", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01T09:30:00+00:00", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01T12:30:00+03:00", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01T04:00:00-05:30", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01T01:00:00+03:00", datetime(2025, 2, 28, 22, 0, tzinfo=UTC)),  # crosses midnight
        ("2025-03-01T09:30:00.250Z", datetime(2025, 3, 1, 9, 30, 0, 250_000, tzinfo=UTC)),
        ("  2025-03-01T09:30:00Z ", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_converts_every_offset_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text, "expire_date")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["2025-03-01T09:30:00", "2025-03-01T09:30:00.5"])
def test_parse_refuses_a_date_time_without_offset(text: str) -> None:
    with pytest.raises(BadRequest, match="expire_date"):
        parse_rfc3339(text, "expire_date")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "2025-03-01",  # a date alone
        "2025-13-01T00:00:00Z",  # month 13
        "2025-02-30T00:00:00Z",  # no such day
        "2025-03-01T25:00:00Z",
        "1740821400",  # a Unix time is not RFC 3339
        "20250301T093000Z",  # ISO 8601 basic format
        "2025-W09-6T09:30:00Z",  # ISO 8601 week date
        "2025-03-01T09:30Z",  # seconds are required
        "2025-03-01T09Z",
        "2025-03-01T09:30:00+0300",  # the offset needs its colon
        "2025-03-01T09:30:00+03",
        "2025-03-01T09:30:00,5Z",  # the fraction separator is a dot
        "\uff12\uff10\uff12\uff15-03-01T09:30:00Z",  # only ASCII digits (these are fullwidth)
        "2025-03-01 09:30:00Z",  # this server insists on the "T" separator
    ],
)
def test_parse_refuses_what_is_not_an_rfc3339_date_time(text: str) -> None:
    with pytest.raises(BadRequest, match="valid_to"):
        parse_rfc3339(text, "valid_to")


def test_format_writes_utc_with_z_in_whole_seconds() -> None:
    assert format_rfc3339(datetime(2025, 3, 1, 9, 30, 15, 999_999, tzinfo=UTC)) == "2025-03-01T09:30:15Z"


def test_format_converts_other_offsets_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    assert format_rfc3339(datetime(2025, 3, 1, 1, 0, tzinfo=moscow)) == "2025-02-28T22:00:00Z"


def test_format_of_a_moment_never_set_is_the_empty_string() -> None:
    assert format_rfc3339(None) == ""


def test_format_and_parse_round_trip() -> None:
    text = "2031-12-31T23:59:59Z"
    assert format_rfc3339(parse_rfc3339(text, "x")) == text
    assert format_rfc3339(parse_rfc3339("2031-12-31T23:59:59-01:00", "x")) == "2032-01-01T00:59:59Z"


def test_utcnow_is_aware_utc() -> None:
    assert utcnow().utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 9, 30, 0, 123_456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2999, 1, 1, tzinfo=UTC),
    ],
)
def test_micros_round_trip(moment: datetime) -> None:
    assert from_micros(to_micros(moment)) == moment


def test_micros_values() -> None:
    assert to_micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
    assert from_micros(None) is None


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-00:01"]
)
def test_parse_refuses_a_moment_outside_years_1_to_9999_in_utc(text: str) -> None:
    """These strings are valid RFC 3339, but their UTC moment is not a date Python (or the storage) can hold:
    they used to escape as an OverflowError, a 500."""
    with pytest.raises(BadRequest, match="years 1 to 9999"):
        parse_rfc3339(text, "expire_date")


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0999-06-01T12:00:00Z"])
def test_the_extreme_years_round_trip_through_storage_and_the_wire(text: str) -> None:
    moment = parse_rfc3339(text, "expire_date")
    assert format_rfc3339(from_micros(to_micros(moment))) == text  # year 1 is "0001", never "1"
