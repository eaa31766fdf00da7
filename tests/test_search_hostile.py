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
