"""Custom SearchParameters posted at run time, $reindex, and other processes following along."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from tests.helpers import unique

ETHNICITY = "http://santong.example/fhir/StructureDefinition/ethnicity"


def ethnic_patient(code: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "阿"}],
            "extension": [{"url": ETHNICITY, "valueCoding": {
                "system": "urn:oid:2.16.156.10011.2.3.3.3", "code": code}}]}


def search_parameter(code: str) -> dict[str, Any]:
    return {"resourceType": "SearchParameter", "url": f"http://santong.example/fhir/SP/{code}",
            "name": code, "status": "active", "description": "GB 3304 ethnicity",
            "code": code, "base": ["Patient"], "type": "token",
            "expression": f"Patient.extension.where(url='{ETHNICITY}').value"}


async def found(client: httpx.AsyncClient, base: str, code: str, value: str) -> set[str]:
    bundle = (await client.get(f"{base}Patient", params={code: value})).json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


async def test_custom_parameter_indexes_new_writes_and_reindex_catches_up(
    client: httpx.AsyncClient,
) -> None:
    code = unique("ethnicity").replace("-", "")
    value = unique("c")
    before = (await client.post("Patient", json=ethnic_patient(value))).json()["id"]
    created = await client.post("SearchParameter", json=search_parameter(code))
    assert created.status_code == 201, created.text
    after = (await client.post("Patient", json=ethnic_patient(value))).json()["id"]
    assert await found(client, "", code, value) == {after}
    reindexed = await client.post("Patient/$reindex")
    assert reindexed.status_code == 200
    assert "Reindexed" in reindexed.json()["issue"][0]["diagnostics"]
    assert await found(client, "", code, value) == {before, after}
    statement = (await client.get("metadata")).json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert code in {p["name"] for p in patient["searchParam"]}
    deleted = await client.delete(f"SearchParameter/{created.json()['id']}")
    assert deleted.status_code == 204
    unknown = await client.get("Patient", params={code: value},
                               headers={"Prefer": "handling=strict"})
    assert unknown.status_code == 400


async def test_unusable_search_parameter_is_rejected(client: httpx.AsyncClient) -> None:
    broken = {**search_parameter("broken"), "expression": "Patient.name.where(("}
    response = await client.post("SearchParameter", json=broken)
    assert response.status_code == 400
    wrong_base = {**search_parameter("wrongbase"), "base": ["NotAType"]}
    assert (await client.post("SearchParameter", json=wrong_base)).status_code == 400


async def test_another_process_follows_through_notify(
    client: httpx.AsyncClient, live_server: str,
) -> None:
    code = unique("ethnic").replace("-", "")
    value = unique("v")
    assert (await client.post("SearchParameter", json=search_parameter(code))).status_code == 201
    async with httpx.AsyncClient(base_url=f"{live_server}/fhir/") as other:
        # The other process learns of the parameter from NOTIFY, within moments.
        for _ in range(50):
            created = (await other.post("Patient", json=ethnic_patient(value))).json()["id"]
            if created in await found(other, "", code, value):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the other process never indexed the new parameter")
