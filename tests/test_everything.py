"""Patient/[id]/$everything (http://hl7.org/fhir/R4/operation-patient-everything.html): the
patient's compartment and what it refers to, paged, with _since and _type."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fhirpy import AsyncFHIRClient
from tests.helpers import create, patient, unique


async def _record(client: httpx.AsyncClient) -> dict[str, str]:
    """A patient, two encounters at an organization, a condition; another patient's encounter."""
    organization = (await create(client, {"resourceType": "Organization",
                                          "name": "城关镇卫生院"})).json()["id"]
    me = (await create(client, patient())).json()["id"]
    other = (await create(client, patient())).json()["id"]

    async def encounter(subject: str) -> str:
        body = {"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "AMB"},
                "subject": {"reference": f"Patient/{subject}"},
                "serviceProvider": {"reference": f"Organization/{organization}"}}
        return str((await create(client, body)).json()["id"])

    first, second, theirs = await encounter(me), await encounter(me), await encounter(other)
    condition = (await create(client, {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{me}"},
        "code": {"text": "高血压"}})).json()["id"]
    return {"patient": me, "other": other, "organization": organization, "first": first,
            "second": second, "theirs": theirs, "condition": condition}


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if mode is None or e["search"]["mode"] == mode}


async def test_everything_is_the_compartment_and_what_it_refers_to(
        client: httpx.AsyncClient) -> None:
    record = await _record(client)
    response = await client.get(f"Patient/{record['patient']}/$everything")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    assert _ids(bundle, "match") == {record[k] for k in ("patient", "first", "second",
                                                          "condition")}
    assert record["organization"] in _ids(bundle, "include")
    assert record["theirs"] not in _ids(bundle) and record["other"] not in _ids(bundle)


async def test_everything_pages_with_next_links(client: httpx.AsyncClient) -> None:
    record = await _record(client)
    seen: list[str] = []
    url: str | None = f"Patient/{record['patient']}/$everything?_count=2"
    while url:
        page = (await client.get(url)).json()
        seen += [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "match"]
        url = next((li["url"] for li in page["link"] if li["relation"] == "next"), None)
    assert sorted(seen) == sorted(record[k] for k in ("patient", "first", "second",
                                                      "condition"))


async def test_everything_since_and_type(client: httpx.AsyncClient) -> None:
    record = await _record(client)
    base = f"Patient/{record['patient']}/$everything"
    only = (await client.get(base, params={"_type": "Condition,Patient"})).json()
    assert _ids(only, "match") == {record["patient"], record["condition"]}
    changed = (await client.get(f"Encounter/{record['second']}")).json()
    await asyncio.sleep(0.01)
    since = (await client.put(f"Encounter/{record['second']}",
                              json={**changed, "status": "cancelled"})).headers["Last-Modified"]
    updated = (await client.get(f"Encounter/{record['second']}")).json()["meta"]["lastUpdated"]
    assert since
    recent = (await client.get(base, params={"_since": updated})).json()
    assert _ids(recent, "match") == {record["second"]}
    posted = await client.post(base, json={"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueCode": "Encounter"}]})
    assert _ids(posted.json(), "match") == {record["first"], record["second"]}


async def test_everything_refuses_what_it_cannot_do(client: httpx.AsyncClient) -> None:
    record = await _record(client)
    base = f"Patient/{record['patient']}/$everything"
    for params, expression in (({"start": "2024-01-01"}, "start"),
                               ({"_type": "ValueSet"}, "_type"),
                               ({"_since": "yesterday"}, "_since"),
                               ({"shoe-size": "42"}, "shoe-size")):
        response = await client.get(base, params=params)
        assert response.status_code == 400, params
        assert response.json()["issue"][0]["expression"] == [expression]
    assert (await client.get(f"Patient/{unique('none')}/$everything")).status_code == 404
    await client.delete(f"Patient/{record['other']}")
    assert (await client.get(f"Patient/{record['other']}/$everything")).status_code == 410
    assert (await client.get(f"Encounter/{record['first']}/$everything")).status_code == 400
    statement = (await client.get("metadata")).json()
    patient_ops = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "everything" in {o["name"] for o in patient_ops["operation"]}


async def test_everything_through_fhirpy(live_server: str) -> None:
    fhir = AsyncFHIRClient(f"{live_server}/fhir", extra_headers={"Accept": "application/fhir+json"})
    person = fhir.resource("Patient", name=[{"family": "钱", "given": ["七"]}])
    await person.save()
    visit = fhir.resource("Encounter", status="finished", subject=person.to_reference(),
                          **{"class": {"system": "http://terminology.hl7.org/CodeSystem/"
                                                 "v3-ActCode", "code": "HH"}})
    await visit.save()
    bundle = await fhir.execute(f"Patient/{person['id']}/$everything", method="get")
    assert {e["resource"]["id"] for e in bundle["entry"]} == {person["id"], visit["id"]}
