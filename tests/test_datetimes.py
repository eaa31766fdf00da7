"""FHIR date, dateTime and instant values as ranges (santong.fhir.datetimes)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from santong.fhir import datetimes
from santong.fhir.datetimes import EARLIEST, LATEST, parse_range


@pytest.mark.parametrize(("value", "start", "end"), [
    ("2024", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
    ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-03-01T08:30:00+08:00", datetime(2024, 3, 1, 0, 30, tzinfo=UTC),
     datetime(2024, 3, 1, 0, 30, 1, tzinfo=UTC)),
    ("2024-03-01T08:30:00Z", datetime(2024, 3, 1, 8, 30, tzinfo=UTC),
     datetime(2024, 3, 1, 8, 30, 1, tzinfo=UTC)),
    ("2024-03-01T08:30:00.25-01:00", datetime(2024, 3, 1, 9, 30, 0, 250000, tzinfo=UTC),
     datetime(2024, 3, 1, 9, 30, 0, 260000, tzinfo=UTC)),
    ("2024-03-01T08:30+08:00", datetime(2024, 3, 1, 0, 30, tzinfo=UTC),
     datetime(2024, 3, 1, 0, 31, tzinfo=UTC)),
    # the ends of what datetime holds: cut there, not an error
    ("9999-12-31", datetime(9999, 12, 31, tzinfo=UTC), LATEST),
    ("0001-01-01T00:30:00+08:00", EARLIEST, EARLIEST),
    ("9999-12-31T23:59:59-08:00", LATEST, LATEST),
])
def test_parse_range(value: str, start: datetime, end: datetime) -> None:
    assert parse_range(value) == (start, end)
    assert parse_range(value)[0].tzinfo is UTC


@pytest.mark.parametrize("value", [
    "2024-13-01", "2024-02-30", "2024-03-01T24:00:00Z", "2024-03-01T08:60:00+08:00",
    "2024-03-01 08:30:00+08:00", "2024-03-01T08:30:00+8:00", "2024-03-01T08",
    "20240301", "",
])
def test_parse_range_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_range(value)


def test_common_shapes_read_as_by_the_general_parser() -> None:
    """Dates and dateTimes to the second with a zone take a quicker path than the other
    precisions: over a grid of them, valid and not, both paths agree (value or error)."""
    def outcome(parse, value):  # type: ignore[no-untyped-def]
        try:
            return parse(value)
        except (ValueError, OverflowError) as exc:
            return type(exc)

    years, months, days = ("0001", "2024", "2023", "9999"), ("00", "02", "12", "13"), \
        ("00", "01", "29", "31", "32")
    times = ("00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60")
    zones = ("Z", "+08:00", "-14:00", "+14:00", "-00:00", "+23:59", "+24:00", "+08:60")
    compared = 0
    for y, m, d in itertools.product(years, months, days):
        date = f"{y}-{m}-{d}"
        values = [date, *(f"{date}T{t}{z}" for t, z in itertools.product(times, zones))]
        for value in values:
            assert outcome(parse_range, value) == outcome(datetimes._parse_any, value), value
            compared += 1
    assert compared == 4 * 4 * 5 * 41


def test_zone_offsets_keep_their_instant() -> None:
    start, _ = parse_range("2024-06-30T23:00:00-05:00")
    assert start == datetime(2024, 6, 30, 23, tzinfo=timezone(timedelta(hours=-5)))
    assert (start.year, start.month, start.day, start.hour) == (2024, 7, 1, 4)
