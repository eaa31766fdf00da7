"""Hostile search input gets a 4xx OperationOutcome, never a 500."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("params", [
    {"name": "a\x00b"},
    {"_id": "x\x00"},
    {"identifier": "\x00|\x00"},
    {"birthdate": "ap0001"},
    {"birthdate": "ap9999-12-31"},
    {"birthdate": "9999-12-31T23:59:59Z"},
    {"birthdate": "0000"},
    {"_lastUpdated": "ap0001-01-01"},
    {"general-practitioner": "x" * 5000},
    {"link." * 40 + "name": "x"},
    {"_has:Patient:link:" * 40 + "name": "x"},
    {"_sort": "-" * 100},
    {"_count": "9" * 40},
    {"_include": "Patient:link:Patient:extra"},
    {"_revinclude:iterate": "Patient:link"},
    {"_total": "accurate", "name:contains": "%_\\"},
    {"_cursor": "W10="},
    {"_cursor": "WzEsMiwzXQ=="},
    {"_text": "\x00"},
    {"_content": "&|!()"},
    {"_elements": "*,,,"},
    {"_summary": "count", "_sort": "name"},
    {"_type": "Patient"},
])
async def test_hostile_searches(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("Patient", params=params)
    assert response.status_code < 500, (params, response.text)
    assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")


@pytest.mark.parametrize("query", ["address=%ED%A0%80", "name=%FF%FE", "%00=1", "name=%"])
async def test_undecodable_queries(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"Patient?{query}")
    assert response.status_code < 500, (query, response.text)


async def test_hostile_post_search(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient/_search", content=b"name=a%00b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400


@pytest.mark.parametrize("key", ["identifier", "family", "_tag", "general-practitioner.name",
                                 "_has:Encounter:subject:status"])
async def test_a_search_with_too_many_values_is_a_400(client: httpx.AsyncClient,
                                                       key: str) -> None:
    """A statement takes at most 32,767 parameters: 40,000 comma-separated values were a 500."""
    response = await client.get("Patient", params={key: ",".join(["a"] * 12_000)})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly" and issue["expression"] == [key], issue


async def test_a_conditional_create_with_too_many_values_is_a_400(
        client: httpx.AsyncClient) -> None:
    criteria = "identifier=" + ",".join(["a"] * 12_000)
    response = await client.post("Patient", json={"resourceType": "Patient"},
                                 headers={"If-None-Exist": criteria})
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize("rid", ["not-a-rid", 1.5, True, None, 2**63, -(2**63), [1], {"a": 1}])
@pytest.mark.parametrize("params", [{"family": "王"}, {"gender": "male"},
                                    {"birthdate": "ge1900", "_sort": "birthdate"}])
async def test_a_cursor_with_a_bad_rid_is_a_400(client: httpx.AsyncClient, rid: object,
                                                params: dict[str, str]) -> None:
    """The default order's last key is the rid, an integer: a cursor holding anything else
    (an id, from before migration 0013; a number PostgreSQL's bigint cannot hold) is a 400
    naming `_cursor`, on every plan (a string prefix, the walk, a sort), never a 500."""
    import base64

    import orjson

    first = await client.get("Patient", params={**params, "_count": "1"})
    assert first.status_code == 200, first.text
    width = 2 + (2 if "_sort" in params else 0)  # (type, rid), after (missing?, value)
    good = [*[False, "1900-01-01T00:00:00+00:00"][: width - 2], "Patient"]
    cursor = base64.urlsafe_b64encode(orjson.dumps({"a": [*good, rid]})).decode()
    response = await client.get("Patient", params={**params, "_cursor": cursor})
    if rid is None or rid == -(2**63):  # a missing value (nothing after it), or the least
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["_cursor"]
