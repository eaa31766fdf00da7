"""Helpers shared by the community and patient generators."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from santong.generate import codes

CST = timezone(timedelta(hours=8))
Resource = dict[str, Any]


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def ref(resource: Resource, display: str | None = None) -> dict[str, str]:
    out = {"reference": f"{resource['resourceType']}/{resource['id']}"}
    if display:
        out["display"] = display
    return out


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None,
            text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if text or display:
        out["text"] = text or display
    return out


def weighted(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    """Pick a row of `table` whose last column is its weight."""
    return rng.choices(table, weights=[row[-1] for row in table])[0]


def fhir_datetime(moment: datetime) -> str:
    return moment.astimezone(CST).isoformat(timespec="seconds")


def at(day: date, rng: random.Random, start_hour: int = 8, end_hour: int = 17) -> datetime:
    minutes = rng.randrange(start_hour * 60, end_hour * 60)
    return datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=CST)


def chinese_name(rng: random.Random, gender: str) -> tuple[str, str]:
    family = weighted(rng, codes.SURNAMES)[0]
    pool = codes.GIVEN_MALE if gender == "male" else codes.GIVEN_FEMALE
    if rng.random() < 0.3:
        given = rng.choice(pool)
    else:
        first = rng.choice(codes.GIVEN_EITHER) if rng.random() < 0.3 else rng.choice(pool)
        given = first + rng.choice(pool)
    return family, given


def human_name(family: str, given: str) -> dict[str, Any]:
    return {"use": "official", "text": family + given, "family": family, "given": [given]}


def mobile(rng: random.Random) -> str:
    return rng.choice(("13", "15", "17", "18", "19")) + f"{rng.randrange(10**9):09d}"


def address(township: str, village: str | None, rng: random.Random,
            use: str = "home") -> dict[str, Any]:
    line = [township] + ([village] if village else []) + [f"{rng.randint(1, 180)}号"]
    text = codes.PROVINCE[1] + codes.CITY[1] + codes.COUNTY[1] + "".join(line)
    return {
        "extension": [{"url": codes.EXT_DIVISION,
                       "valueCoding": coding(codes.OID_DIVISION, codes.COUNTY[0],
                                             codes.COUNTY[1])}],
        "use": use, "type": "both", "text": text, "line": line,
        "city": codes.CITY[1], "district": codes.COUNTY[1], "state": codes.PROVINCE[1],
        "postalCode": codes.POSTAL_CODE, "country": "CN",
    }
