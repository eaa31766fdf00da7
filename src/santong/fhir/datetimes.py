"""FHIR date, dateTime and instant values as time ranges (their precision is their range).

http://hl7.org/fhir/R4/datatypes.html#dateTime and http://hl7.org/fhir/R4/search.html#date
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_DATETIME = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    return moment.replace(year=moment.year + month // 12, month=month % 12 + 1)


def parse_range(value: str) -> tuple[datetime, datetime]:
    """The half-open range [start, end) a FHIR date/dateTime/instant stands for.

    Times without a zone are taken as UTC. Raises ValueError for anything malformed.
    """
    match = _DATETIME.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a FHIR date, dateTime or instant")
    g = match.groupdict()
    zone = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    fraction = g["f"] or ""
    start = datetime(
        int(g["y"]), int(g["m"] or 1), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0),
        int(g["S"] or 0), int((fraction + "000000")[:6]), tzinfo=zone,
    )
    try:
        if g["m"] is None:
            end = start.replace(year=start.year + 1)
        elif g["d"] is None:
            end = _add_months(start, 1)
        elif g["H"] is None:
            end = start + timedelta(days=1)
        elif g["S"] is None:
            end = start + timedelta(minutes=1)
        elif not fraction:
            end = start + timedelta(seconds=1)
        else:
            end = start + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    except (ValueError, OverflowError):  # the end of 9999 is past what datetime holds
        end = LATEST
    return _utc(start), _utc(end)


# The extremes datetime holds: year 1 and 9999 values (valid FHIR) whose range, or its UTC
# form, reaches past them are cut there (by a microsecond at most at the end).
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return EARLIEST if moment.year == 1 else LATEST
