"""Parameters that store no index rows of their own (SearchParameter.stored_as): one with the
same expression as another (Patient `phonetic` = `name`) or the union of others' (Observation
`combo-code` = `code` | `component-code`) is searched in those rows, and finds what its own
expression selects: every modifier, :missing, :not, comparators, sorting, system search."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from tests.helpers import unique

from santong.search.parameters import get
from santong.storage.database import asyncpg_connect_args

TAG = "urn:santong:test"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def test_which_parameters_share_rows() -> None:
    def stored(resource_type: str, code: str) -> tuple[str, ...]:
        param = get(resource_type, code)
        assert param is not None
        return param.stored_as

    assert stored("Patient", "phonetic") == ("name",)
    assert stored("Practitioner", "phonetic") == ("name",)
    assert stored("Observation", "combo-code") == ("code", "component-code")
    assert stored("Observation", "combo-value-quantity") == (
        "component-value-quantity", "value-quantity")
    assert stored("Observation", "combo-value-concept") == (
        "component-value-concept", "value-concept")
    assert stored("Observation", "combo-code-value-quantity") == (
        "code-value-quantity", "component-code-value-quantity")
    # Stored as themselves: different expressions, references, dates and uris.
    for resource_type, code in [("Patient", "name"), ("Observation", "code"),
                                ("Observation", "component-code"), ("Coverage", "patient"),
                                ("Observation", "code-value-quantity"),
                                ("Observation", "component-code-value-concept"),
                                ("CodeSystem", "url"), ("CodeSystem", "system"),
                                ("Encounter", "date")]:
        assert stored(resource_type, code) == (), (resource_type, code)


def _tagged(tag: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": TAG, "code": tag}]}}


def _quantity(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}


def _coded(code: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code}]}


@pytest.fixture(scope="module")
async def observations(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A blood pressure (its values in components), a heart rate (its own value), a coded
    finding and one without a value; by name, their ids."""
    tag = unique("combo")
    made = {}
    for name, resource in {
        "pressure": {"code": _coded("85354-9"), "component": [
            {"code": _coded("8480-6"), "valueQuantity": _quantity(150)},
            {"code": _coded("8462-4"), "valueQuantity": _quantity(95)}]},
        "rate": {"code": _coded("8867-4"), "valueQuantity": _quantity(72)},
        "finding": {"code": _coded("11450-4"), "valueCodeableConcept": _coded("LA6576-8")},
        "pending": {"code": _coded("2339-0")},
    }.items():
        response = await client.post("Observation", json=_tagged(tag, {
            "resourceType": "Observation", "status": "final", **resource}))
        assert response.status_code == 201, response.text
        made[name] = response.json()["id"]
    return tag, made


async def _found(client: httpx.AsyncClient, tag: str, resource_type: str,
                 params: list[tuple[str, str]]) -> list[str]:
    response = await client.get(resource_type, params=[*params, ("_tag", f"{TAG}|{tag}")])
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    assert all(e["search"]["mode"] == "match" for e in entries), entries  # none ignored
    return [e["resource"]["id"] for e in entries]


@pytest.mark.parametrize(("params", "expected"), [
    ([("combo-code", "8480-6")], {"pressure"}),  # a component's code
    ([("combo-code", "8867-4")], {"rate"}),  # the Observation's own
    ([("combo-code", f"{LOINC}|85354-9,{LOINC}|2339-0")], {"pressure", "pending"}),
    ([("combo-code:not", "8480-6")], {"rate", "finding", "pending"}),
    ([("combo-value-quantity", "gt100")], {"pressure"}),
    ([("combo-value-quantity", f"lt80|{UCUM}|mm[Hg]")], {"rate"}),
    ([("combo-value-quantity", "ge72"), ("combo-value-quantity", "le95")],
     {"pressure", "rate"}),
    ([("combo-value-quantity:missing", "true")], {"finding", "pending"}),
    ([("combo-value-concept", "LA6576-8")], {"finding"}),
    ([("combo-code:missing", "false"), ("combo-value-concept:missing", "true")],
     {"pressure", "rate", "pending"}),
    ([("combo-code-value-quantity", "8480-6$gt140")], {"pressure"}),  # its systolic
    ([("combo-code-value-quantity", "8462-4$gt140")], set()),  # the diastolic is 95
    ([("combo-code-value-quantity", f"{LOINC}|8867-4$72")], {"rate"}),
    ([("combo-code-value-quantity", "85354-9$gt0")], set()),  # its values are components'
    ([("combo-code-value-concept", "11450-4$LA6576-8")], {"finding"}),
])
async def test_union_parameters_find_what_their_expression_selects(
        client: httpx.AsyncClient, observations: tuple[str, dict[str, str]],
        params: list[tuple[str, str]], expected: set[str]) -> None:
    tag, made = observations
    found = await _found(client, tag, "Observation", params)
    assert sorted(found) == sorted(made[name] for name in expected), params


async def test_sorting_by_a_union_parameter(
        client: httpx.AsyncClient, observations: tuple[str, dict[str, str]]) -> None:
    tag, made = observations
    # Ascending by the lowest value: rate 72, pressure 95 (its diastolic), then no value.
    found = await _found(client, tag, "Observation", [("_sort", "combo-value-quantity")])
    assert found[:2] == [made["rate"], made["pressure"]]
    assert set(found[2:]) == {made["finding"], made["pending"]}
    found = await _found(client, tag, "Observation", [("_sort", "-combo-value-quantity")])
    assert found[:2] == [made["pressure"], made["rate"]]  # highest: 150 against 72


async def test_an_alias_finds_what_its_twin_finds_and_stores_no_rows(
        client: httpx.AsyncClient, database_url: str) -> None:
    tag = unique("phonetic")
    ids = []
    for family, given in [("Zhang", "San"), ("Zhao", "Li"), ("李", "四")]:
        response = await client.post("Patient", json=_tagged(tag, {
            "resourceType": "Patient", "name": [{"family": family, "given": [given]}]}))
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    for value, expected in [("zh", ids[:2]), ("Zhang", ids[:1]), ("李", ids[2:]),
                            ("nobody", [])]:
        for code in ("name", "phonetic"):
            found = await _found(client, tag, "Patient", [(code, value), ("_sort", "_id")])
            assert found == sorted(expected), (code, value)
    assert await _found(client, tag, "Patient", [("phonetic:exact", "Zhao")]) == [ids[1]]
    assert await _found(client, tag, "Patient", [("phonetic:contains", "an")]) == [ids[0]]
    by_phonetic = await _found(client, tag, "Patient", [("_sort", "-phonetic")])
    assert by_phonetic == await _found(client, tag, "Patient", [("_sort", "-name")])
    connection = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        codes = {row[0] for row in await connection.fetch(
            "SELECT DISTINCT s.code FROM search_string s JOIN resource r ON r.rid = s.rid"
            " WHERE r.resource_type = 'Patient' AND r.id = ANY($1)", ids)}
    finally:
        await connection.close()
    assert "name" in codes and "phonetic" not in codes


async def test_sorting_several_types_by_a_code_stored_differently_in_each(
        client: httpx.AsyncClient) -> None:
    """CapabilityStatement `version` is stored as `fhirversion`; CodeSystem `version` as
    itself: a system search sorting both by `version` orders each by its own rows."""
    tag = unique("versions")
    made = {}
    for resource in [
        {"resourceType": "CapabilityStatement", "status": "active", "date": "2024-01-01",
         "kind": "capability", "fhirVersion": "4.0.1", "format": ["json"], "version": "b",
         "software": {"name": "test"}, "rest": [{"mode": "server"}]},
        {"resourceType": "CodeSystem", "status": "active", "content": "not-present",
         "version": "a"},
        {"resourceType": "CodeSystem", "status": "active", "content": "not-present",
         "version": "c"},
    ]:
        response = await client.post(resource["resourceType"], json=_tagged(tag, resource))
        assert response.status_code == 201, response.text
        made[resource["version"]] = response.json()["id"]
    response = await client.get("", params=[("_type", "CapabilityStatement,CodeSystem"),
                                            ("_sort", "version"), ("_tag", f"{TAG}|{tag}")])
    assert response.status_code == 200, response.text
    found = [e["resource"]["id"] for e in response.json().get("entry", [])]
    assert found == [made["a"], made["b"], made["c"]]
    response = await client.get("", params=[("_type", "CapabilityStatement,CodeSystem"),
                                            ("version", "b"), ("_tag", f"{TAG}|{tag}")])
    assert [e["resource"]["id"] for e in response.json().get("entry", [])] == [made["b"]]


async def test_sorting_by_a_shared_parameter_leaves_types_without_it_last(
        client: httpx.AsyncClient, observations: tuple[str, dict[str, str]]) -> None:
    """A Condition has `code` rows, Observation `combo-code` is stored in `code` rows: sorting
    Observations and Conditions by `combo-code` must not sort the Condition by its code."""
    tag, made = observations
    response = await client.post("Condition", json=_tagged(tag, {
        "resourceType": "Condition", "subject": {"reference": "Patient/p"},
        "code": _coded("0001")}))  # before every Observation's codes
    assert response.status_code == 201, response.text
    condition = response.json()["id"]
    response = await client.get("", params=[("_type", "Observation,Condition"),
                                            ("_sort", "combo-code"), ("_tag", f"{TAG}|{tag}")])
    assert response.status_code == 200, response.text
    found = [e["resource"]["id"] for e in response.json().get("entry", [])]
    assert found[-1] == condition and len(found) == len(made) + 1, found
