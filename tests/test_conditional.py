"""Conditional create, update and delete (http://hl7.org/fhir/R4/http.html#ccreate)."""

from __future__ import annotations

import asyncio

import httpx
from tests.helpers import create, patient, unique

SYSTEM = "urn:oid:2.16.156.10011.1.3"


def with_identifier(value: str) -> dict:
    return patient(identifier=[{"system": SYSTEM, "value": value}])


async def test_if_none_exist(client: httpx.AsyncClient) -> None:
    value = unique("nid")
    criteria = {"If-None-Exist": f"identifier={SYSTEM}|{value}"}
    first = await client.post("Patient", json=with_identifier(value), headers=criteria)
    assert first.status_code == 201
    second = await client.post("Patient", json=with_identifier(value), headers=criteria)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    # Other spellings of the token match too.
    for token in (value, f"{SYSTEM}|{value}"):
        again = await client.post("Patient", json=with_identifier(value),
                                  headers={"If-None-Exist": f"identifier={token}"})
        assert again.status_code == 200, token
    by_id = await client.post("Patient", json=patient(),
                              headers={"If-None-Exist": f"_id={first.json()['id']}"})
    assert by_id.status_code == 200
    # Two matches: 412.
    await create(client, with_identifier(value))
    both = await client.post("Patient", json=with_identifier(value), headers=criteria)
    assert both.status_code == 412


async def test_if_none_exist_rejects_unsupported_criteria(client: httpx.AsyncClient) -> None:
    response = await client.post("Patient", json=patient(),
                                 headers={"If-None-Exist": "shoe-size=42"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["shoe-size"]


async def test_concurrent_conditional_creates_make_one_resource(
    client: httpx.AsyncClient,
) -> None:
    value = unique("race")
    criteria = {"If-None-Exist": f"identifier={SYSTEM}|{value}"}
    responses = await asyncio.gather(
        *(client.post("Patient", json=with_identifier(value), headers=criteria)
          for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_concurrent_conditional_updates_create_one_resource(
    client: httpx.AsyncClient,
) -> None:
    """Concurrent conditional updates of criteria nothing matches yet: one creates, the
    others wait for it and update what it created (no lost write, no duplicate)."""
    value = unique("race-put")
    responses = await asyncio.gather(*(
        client.put("Patient", params={"identifier": f"{SYSTEM}|{value}"},
                   json={**with_identifier(value), "birthDate": f"198{n}-01-01"})
        for n in range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    found = (await client.get("Patient", params={"identifier": f"{SYSTEM}|{value}"})).json()
    assert [e["resource"]["meta"]["versionId"] for e in found["entry"]] == ["6"]


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    value = unique("cu")
    params = {"identifier": f"{SYSTEM}|{value}"}
    created = await client.put("Patient", params=params, json=with_identifier(value))
    assert created.status_code == 201
    id = created.json()["id"]
    updated = await client.put("Patient", params=params,
                               json={**with_identifier(value), "gender": "female"})
    assert updated.status_code == 200
    assert updated.json()["id"] == id
    assert updated.json()["meta"]["versionId"] == "2"
    wrong_id = await client.put("Patient", params=params,
                                json={**with_identifier(value), "id": "another"})
    assert wrong_id.status_code == 400
    await create(client, with_identifier(value))
    several = await client.put("Patient", params=params, json=with_identifier(value))
    assert several.status_code == 412


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    value = unique("cd")
    created = (await create(client, with_identifier(value))).json()
    params = {"identifier": f"{SYSTEM}|{value}"}
    assert (await client.delete("Patient", params=params)).status_code == 204
    assert (await client.get(f"Patient/{created['id']}")).status_code == 410
    assert (await client.delete("Patient", params=params)).status_code == 204
    await create(client, with_identifier(value))
    await create(client, with_identifier(value))
    assert (await client.delete("Patient", params=params)).status_code == 412
    assert (await client.delete("Patient")).status_code == 400


async def test_search_by_id_and_identifier(client: httpx.AsyncClient) -> None:
    value = unique("s")
    ids = [(await create(client, with_identifier(value))).json()["id"] for _ in range(3)]
    found = (await client.get("Patient", params={"identifier": value, "_count": 2})).json()
    assert found["type"] == "searchset"
    assert len(found["entry"]) == 2
    next_url = next(link["url"] for link in found["link"] if link["relation"] == "next")
    rest = (await client.get(next_url)).json()
    got = [e["resource"]["id"] for e in found["entry"] + rest["entry"]]
    assert sorted(got) == sorted(ids)
    assert not any(link["relation"] == "next" for link in rest["link"])
    by_id = (await client.get("Patient", params={"_id": ids[0]})).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == [ids[0]]
    count = (await client.get("Patient", params={"identifier": value, "_summary": "count"}))
    assert count.json()["total"] == 3
    ignored = (await client.get("Patient", params={"_id": ids[0], "shoe-size": "x"})).json()
    outcomes = [e for e in ignored["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = await client.get("Patient", params={"shoe-size": "x"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
