"""Differential test: the server's search against an independent evaluation.

A seeded population of Patients is stored once; hypothesis then draws searches (string, token
and date parameters, with modifiers and prefixes) and each result set must equal what this file
computes on its own: the SearchParameter's FHIRPath expression evaluated by fhirpathpy over the
same resources, then the matching rules of http://hl7.org/fhir/R4/search.html written out
afresh here (no code shared with the server's compiler or indexer).
"""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypinyin import lazy_pinyin
from tests.helpers import unique

from santong.search import engine

TAG = "urn:santong:differential"
FAMILIES = ["张", "王", "李", "Müller", "Muller", "O'Brien", "Åberg", "van Dijk", "Zhang"]
GIVENS = ["三", "小明", "Anna", "Ånna", "José", "Jo", "Li"]
SYSTEMS = ["urn:oid:2.16.156.10011.1.3", "urn:oid:2.16.156.10011.1.2"]
DATES = ["1970", "1970-03", "1970-03-15", "1985-11-05", "2001", "2001-12-31", "1969-12-31"]
EXPRESSIONS = {
    "name": "Patient.name",
    "family": "Patient.name.family",
    "given": "Patient.name.given",
    "gender": "Patient.gender",
    "identifier": "Patient.identifier",
    "birthdate": "Patient.birthDate",
}


def make_population(seed: int, tag: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    patients = []
    for n in range(40):
        patient: dict[str, Any] = {"resourceType": "Patient", "id": f"{tag}-{n}",
                                   "meta": {"tag": [{"system": TAG, "code": tag}]}}
        if rng.random() < 0.9:
            patient["name"] = [{"family": rng.choice(FAMILIES),
                                "given": rng.sample(GIVENS, rng.randint(0, 2))}
                               for _ in range(rng.randint(1, 2))]
            for name in patient["name"]:
                if not name["given"]:
                    del name["given"]
        if rng.random() < 0.8:
            patient["gender"] = rng.choice(["male", "female", "other", "unknown"])
        if rng.random() < 0.8:
            patient["birthDate"] = rng.choice(DATES)
        if rng.random() < 0.7:
            patient["identifier"] = [{"system": rng.choice(SYSTEMS),
                                      "value": str(rng.randint(1, 5))}]
        patients.append(patient)
    return patients


# -- the independent evaluation -------------------------------------------------------------

def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def string_parts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    parts = [value.get("family"), *value.get("given", []), value.get("text")]
    found = [p for p in parts if isinstance(p, str)]
    if value.get("family") and value.get("given") and any("\u4e00" <= c <= "\u9fff"
                                                           for c in value["family"]):
        found.append(value["family"] + "".join(value["given"]))
    return found


def _han(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def pinyin_forms(value: Any) -> list[str]:
    """What Patient `name` also matches: the pinyin of Chinese name parts (together, spaced,
    initials) and of family and given as two words. The population has no polyphonic
    characters, so pypinyin's first reading is the only one."""
    if not isinstance(value, dict):
        return []
    forms = []
    for part in string_parts(value):
        if _han(part):
            syllables = lazy_pinyin(part)
            forms += ["".join(syllables), " ".join(syllables), "".join(s[0] for s in syllables)]
    family, given = value.get("family"), "".join(value.get("given", []))
    if family and given and _han(family) and _han(given):
        forms.append(f"{''.join(lazy_pinyin(family))} {''.join(lazy_pinyin(given))}")
    return forms


def pinyin_query(value: str) -> str | None:
    """A query as pinyin: tone marks (folded) and tone numbers (li3) dropped."""
    folded = re.sub(r"(?<=[a-z])[1-5]", "", fold(value).replace("'", ""))
    return folded if folded and all(c.isascii() and (c.isalpha() or c == " ")
                                    for c in folded) else None


def date_range(text: str) -> tuple[datetime, datetime]:
    parts = [int(p) for p in text.split("-")]
    start = datetime(parts[0], parts[1] if len(parts) > 1 else 1,
                     parts[2] if len(parts) > 2 else 1, tzinfo=UTC)
    if len(parts) == 1:
        return start, start.replace(year=start.year + 1)
    if len(parts) == 2:
        month = start.month % 12 + 1
        return start, start.replace(year=start.year + (start.month == 12), month=month)
    return start, start + timedelta(days=1)


def range_matches(prefix: str, search: str, target: tuple[datetime, datetime]) -> bool:
    (sl, sh), (tl, th) = date_range(search), target
    contained = sl <= tl and th <= sh
    return {
        "eq": contained, "ne": not contained,
        "gt": th > sh, "lt": tl < sl,
        "ge": th > sh or contained, "le": tl < sl or contained,
        "sa": tl >= sh, "eb": th <= sl,
    }[prefix]


def date_matches(prefix: str, search: str, target: str) -> bool:
    return range_matches(prefix, search, date_range(target))


def expected(patients: list[dict[str, Any]], code: str, modifier: str, value: str) -> set[str]:
    result = set()
    for patient in patients:
        values = evaluate(patient, EXPRESSIONS[code])
        if code in ("name", "family", "given"):
            parts = [p for v in values for p in string_parts(v)]
            if modifier == "exact":
                hit = value in parts
            elif modifier == "contains":
                hit = any(fold(value) in fold(p) for p in parts)
            else:
                hit = any(fold(p).startswith(fold(value)) for p in parts)
                query = pinyin_query(value)
                if code == "name" and query and not hit:
                    hit = any(f.startswith(query) for v in values for f in pinyin_forms(v))
        elif code == "gender":
            hit = value in values
            hit = not hit if modifier == "not" else hit
        elif code == "identifier":
            system, _, code_value = value.rpartition("|")
            hit = any(v.get("value") == code_value and (not system or v.get("system") == system)
                      for v in values)
        else:
            prefix, date = value[:2], value[2:]
            hit = any(date_matches(prefix, date, v) for v in values)
        if hit:
            result.add(patient["id"])
    return result


# -- the test -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def population(client: httpx.AsyncClient) -> tuple[str, list[dict[str, Any]]]:
    tag = unique("diff")
    patients = make_population(20261123, tag)
    for patient in patients:
        response = await client.put(f"Patient/{patient['id']}", json=patient)
        assert response.status_code == 201, response.text
    # The population is rich enough that searches select something, and not everything.
    for code, value in (("family", "张"), ("name", "mul"), ("birthdate", "ge1970"),
                        ("gender", "male"), ("identifier", "3")):
        assert 0 < len(expected(patients, code, "", value)) < len(patients), (code, value)
    return tag, patients


searches = st.one_of(
    st.tuples(st.sampled_from(["name", "family", "given"]),
              st.sampled_from(["", "exact", "contains"]),
              st.sampled_from([*FAMILIES, *GIVENS, "张三", "mul", "MÜ", "an", "o'", "小",
                               "zhang san", "xm", "wang xiao", "Lǐ", "li3"])),
    st.tuples(st.just("gender"), st.sampled_from(["", "not"]),
              st.sampled_from(["male", "female", "other", "unknown"])),
    st.tuples(st.just("identifier"), st.just(""),
              st.builds(lambda s, v: f"{s}|{v}" if s else v,
                        st.sampled_from(["", *SYSTEMS]), st.integers(1, 5).map(str))),
    st.tuples(st.just("birthdate"), st.just(""),
              st.builds(lambda p, d: p + d,
                        st.sampled_from(["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]),
                        st.sampled_from([*DATES, "1970-03-16", "1986", "2001-12"]))),
)


@pytest.mark.parametrize("value", ["Zhang", "zs", "zhang san", "wang xiaoming", "Li", "xm",
                                   "li3", "Lǐ"])
async def test_name_matches_pinyin_as_the_oracle_says(
    client: httpx.AsyncClient, population: tuple[str, list[dict[str, Any]]], value: str,
) -> None:
    tag, patients = population
    want = expected(patients, "name", "", value)
    written = {p["id"] for p in patients
               if any(fold(part).startswith(fold(value)) for v in evaluate(p, "Patient.name")
                      for part in string_parts(v))}
    assert want - written, "the pinyin adds nothing here: a useless case"
    response = await client.get("Patient", params={"name": value, "_tag": f"{TAG}|{tag}",
                                                   "_count": 100})
    assert {e["resource"]["id"] for e in response.json().get("entry", [])} == want


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(search=searches)
async def test_search_agrees_with_fhirpath(
    client: httpx.AsyncClient, population: tuple[str, list[dict[str, Any]]],
    search: tuple[str, str, str],
) -> None:
    tag, patients = population
    code, modifier, value = search
    key = f"{code}:{modifier}" if modifier else code
    response = await client.get("Patient", params={key: value, "_tag": f"{TAG}|{tag}",
                                                   "_count": 100})
    assert response.status_code == 200, response.text
    got = {e["resource"]["id"] for e in response.json().get("entry", [])
           if e["search"]["mode"] == "match"}
    assert got == expected(patients, code, modifier, value), (key, value)


# -- two-sided date ranges ------------------------------------------------------------------
#
# A date range with both bounds (`birthdate=ge1970&birthdate=lt1986`, `date=2024-05`) may start
# from the spans of the resources' values near its window (santong.search.engine._narrowed).
# Each search here runs with that starting point and without it: both must agree with the
# oracle, for single values (Patient.birthDate) and for several Periods per resource, open at
# either end (CarePlan activity-date), where the bounds can be met by different values.

NARROW_ROWS = engine._NARROW_ROWS  # as shipped (tests below set it, and a test's changes last)
PREFIXES_ALL = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]
PERIOD_DATES = ["2023", "2023-06", "2023-06-15", "2024-01-31", "2024-02", "2024-02-29", "2025"]


def period_range(period: dict[str, Any]) -> tuple[datetime, datetime]:
    low = date_range(period["start"])[0] if "start" in period else datetime.min.replace(tzinfo=UTC)
    high = date_range(period["end"])[1] if "end" in period else datetime.max.replace(tzinfo=UTC)
    return low, high


def make_care_plans(seed: int, tag: str, subject: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plans = []
    for n in range(40):
        activities = []
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            start, end = sorted(rng.sample(PERIOD_DATES, 2), key=lambda d: date_range(d)[0])
            period = {"start": start, "end": end}
            if rng.random() < 0.2:
                del period["start"]
            elif rng.random() < 0.2:
                del period["end"]
            activities.append({"detail": {"status": "scheduled", "scheduledPeriod": period}})
        plan: dict[str, Any] = {"resourceType": "CarePlan", "id": f"{tag}-{n}",
                                "meta": {"tag": [{"system": TAG, "code": tag}]},
                                "status": "active", "intent": "plan",
                                "subject": {"reference": subject}}
        if activities:
            plan["activity"] = activities
        plans.append(plan)
    return plans


def expected_plans(plans: list[dict[str, Any]], conditions: list[str]) -> set[str]:
    found = set()
    for plan in plans:
        scheduled = evaluate(plan, "CarePlan.activity.detail.scheduled", {}, models["r4"])
        ranges = [period_range(p) for p in scheduled]
        if all(any(range_matches(c[:2], c[2:], r) for r in ranges) for c in conditions):
            found.add(plan["id"])
    return found


@pytest.fixture(scope="module")
async def care_plans(client: httpx.AsyncClient) -> tuple[str, list[dict[str, Any]]]:
    tag = unique("plans")
    subject = {"resourceType": "Patient", "id": f"{tag}-subject"}
    assert (await client.put(f"Patient/{subject['id']}", json=subject)).status_code == 201
    plans = make_care_plans(20261126, tag, f"Patient/{subject['id']}")
    for plan in plans:
        response = await client.put(f"CarePlan/{plan['id']}", json=plan)
        assert response.status_code == 201, response.text
    # Some plan is found only through two different activities (one per bound).
    split = [p for p in plans if len(p.get("activity", ())) > 1]
    assert split, "no plan with several activities: the multi-valued case is not exercised"
    return tag, plans


date_values = st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES_ALL),
                        st.sampled_from([*DATES, "1970-03-16", "1986", "2001-12"]))
period_values = st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES_ALL),
                          st.sampled_from([*PERIOD_DATES, "2023-12", "2024-02-01", "2024"]))


async def _both_ways(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str,
                     params: list[tuple[str, str]]) -> list[set[str]]:
    """The search's matches with the narrowing (any: the data is small) and without."""
    found = []
    for rows in (NARROW_ROWS, 0):
        monkeypatch.setattr(engine, "_NARROW_ROWS", rows)
        response = await client.get(path, params=[*params, ("_count", "100")])
        assert response.status_code == 200, response.text
        found.append({e["resource"]["id"] for e in response.json().get("entry", [])})
    return found


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=date_values, second=date_values)
async def test_two_sided_birthdate_ranges_agree_with_fhirpath(
    client: httpx.AsyncClient, population: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch, first: str, second: str,
) -> None:
    tag, patients = population
    want = expected(patients, "birthdate", "", first) & expected(patients, "birthdate", "",
                                                                  second)
    params = [("birthdate", first), ("birthdate", second), ("_tag", f"{TAG}|{tag}")]
    narrowed, plain = await _both_ways(client, monkeypatch, "Patient", params)
    assert narrowed == want, (first, second)
    assert plain == want, (first, second)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conditions=st.lists(period_values, min_size=1, max_size=3))
async def test_period_ranges_over_several_values_agree_with_fhirpath(
    client: httpx.AsyncClient, care_plans: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch, conditions: list[str],
) -> None:
    tag, plans = care_plans
    params = [*(("activity-date", c) for c in conditions), ("_tag", f"{TAG}|{tag}")]
    narrowed, plain = await _both_ways(client, monkeypatch, "CarePlan", params)
    want = expected_plans(plans, conditions)
    assert narrowed == want, conditions
    assert plain == want, conditions


async def test_a_range_found_only_through_different_values(
    client: httpx.AsyncClient, care_plans: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One activity in 2023 and one in 2025, none in 2024: `ge2025&lt2024` finds the plan (each
    bound met by a value of its own), though no value lies in the window between them."""
    tag, _ = care_plans
    plan = {"resourceType": "CarePlan", "id": f"{tag}-apart", "status": "active",
            "intent": "plan", "subject": {"reference": f"Patient/{tag}-subject"},
            "activity": [{"detail": {"status": "scheduled", "scheduledPeriod": period}}
                         for period in ({"start": "2023-03-01", "end": "2023-04-01"},
                                        {"start": "2025-03-01", "end": "2025-04-01"})]}
    assert (await client.put(f"CarePlan/{plan['id']}", json=plan)).status_code == 201
    params = [("activity-date", "ge2025-01-01"), ("activity-date", "lt2024-01-01"),
              ("_id", plan["id"])]
    assert await _both_ways(client, monkeypatch, "CarePlan", params) == [{plan["id"]}] * 2
    params = [("activity-date", "ge2024-01-01"), ("activity-date", "lt2025-01-01"),
              ("_id", plan["id"])]
    assert await _both_ways(client, monkeypatch, "CarePlan", params) == [{plan["id"]}] * 2
    params = [("activity-date", "2024"), ("_id", plan["id"])]
    assert await _both_ways(client, monkeypatch, "CarePlan", params) == [set(), set()]


async def test_every_pair_of_bounds_agrees_with_fhirpath(
    client: httpx.AsyncClient, population: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each prefix that bounds a range from below against each that bounds it from above, at
    the precisions the population's birth dates have: every edge of the window, exhaustively."""
    tag, patients = population
    dates = ["1970", "1970-03", "1970-03-15", "2001-12"]
    found_any = 0
    for first in (p + d for p in ("eq", "gt", "sa", "ge") for d in dates):
        for second in (p + d for p in ("eq", "lt", "eb", "le") for d in dates):
            want = (expected(patients, "birthdate", "", first)
                    & expected(patients, "birthdate", "", second))
            params = [("birthdate", first), ("birthdate", second), ("_tag", f"{TAG}|{tag}")]
            narrowed, plain = await _both_ways(client, monkeypatch, "Patient", params)
            assert narrowed == want, (first, second)
            assert plain == want, (first, second)
            found_any += bool(want)
    assert found_any > 30, "too few pairs select anything to tell"


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(min_size=1, max_size=3), text=st.text(max_size=5))
def test_a_prefix_range_holds_exactly_the_strings_it_starts(prefix: str, text: str) -> None:
    """The bound range a string prefix searches the index with (santong.search.query,
    _successor): in UTF-8 byte order, as PostgreSQL's pattern operators compare."""
    from santong.search.query import _successor

    upper = _successor(prefix)
    for candidate in (text, prefix + text, prefix[:-1] + text):
        if any("\ud800" <= c <= "\udfff" for c in candidate + prefix):
            continue  # not encodable: no stored value holds a surrogate
        encoded = candidate.encode()
        within = prefix.encode() <= encoded and (upper is None or encoded < upper.encode())
        assert within == candidate.startswith(prefix), (prefix, candidate, upper)
