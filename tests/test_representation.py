"""_format, Accept, _pretty, Prefer, _summary and _elements."""

from __future__ import annotations

import httpx
from tests.helpers import create, patient

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}


async def test_formats(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    for params, headers, media in (
        ({}, {}, "application/fhir+json"),
        ({"_format": "json"}, {}, "application/fhir+json"),
        ({"_format": "application/json"}, {}, "application/json"),
        ({"_format": "application/fhir+json"}, {}, "application/fhir+json"),
        ({}, {"Accept": "application/json"}, "application/json"),
        ({}, {"Accept": "text/html,*/*;q=0.8"}, "application/fhir+json"),
        ({}, {"Accept": "application/fhir+xml;q=0.9, application/fhir+json"},
         "application/fhir+json"),
    ):
        response = await client.get(url, params=params, headers=headers)
        assert response.status_code == 200, (params, headers)
        assert response.headers["Content-Type"].split(";")[0] == media
        assert response.json()["id"] == created["id"]


async def test_pretty(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    compact = await client.get(f"Patient/{created['id']}")
    pretty = await client.get(f"Patient/{created['id']}", params={"_pretty": "true"})
    assert b"\n" not in compact.content
    assert b'\n  "resourceType": "Patient"' in pretty.content
    assert pretty.json() == compact.json()


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = await client.post("Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert "Location" in minimal.headers and minimal.headers["ETag"] == 'W/"1"'
    outcome = await client.post("Patient", json=patient(),
                                headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    full = await client.post("Patient", json=patient(),
                             headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


async def test_summary_and_elements(client: httpx.AsyncClient) -> None:
    resource = patient(text={"status": "generated", "div": "<div>张三</div>"},
                       _gender={"extension": [{"url": "http://x/e", "valueString": "x"}]},
                       photo=[{"contentType": "image/png", "data": "AAAA"}],
                       contact=[{"name": {"family": "李"}}])
    created = (await create(client, resource)).json()
    url = f"Patient/{created['id']}"

    summary = (await client.get(url, params={"_summary": "true"})).json()
    assert "name" in summary and "birthDate" in summary
    assert "photo" not in summary and "contact" not in summary and "text" not in summary
    assert SUBSETTED in summary["meta"]["tag"]

    text = (await client.get(url, params={"_summary": "text"})).json()
    assert set(text) == {"resourceType", "id", "meta", "text"}

    data = (await client.get(url, params={"_summary": "data"})).json()
    assert "text" not in data and "photo" in data

    full = (await client.get(url, params={"_summary": "false"})).json()
    assert full == created

    elements = (await client.get(url, params={"_elements": "gender,Patient.birthDate"})).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender", "_gender", "birthDate"}
    assert SUBSETTED in elements["meta"]["tag"]

    assert (await client.get(url, params={"_summary": "count"})).status_code == 400
