"""Batch Bundles (http://hl7.org/fhir/R4/http.html#transaction, batch rules #brules)."""

from __future__ import annotations

import httpx
from tests.helpers import create, patient, unique
from tests.test_transaction import (
    SYSTEM,
    bundle,
    by_identifier,
    call,
    location_id,
    observation,
    post,
    put,
    urn,
    with_identifier,
)

from santong.api.app import create_app
from santong.settings import Settings


async def test_each_entry_succeeds_or_fails_on_its_own(client: httpx.AsyncClient) -> None:
    good, bad = unique("good"), unique("bad")
    existing = (await create(client, patient())).json()
    response = await client.post("", json=bundle(
        "batch",
        post(with_identifier(good)),
        post(with_identifier(bad, birthDate="yesterday")),
        call("GET", f"Patient/{unique('missing')}"),
        put({**existing, "gender": "female"}, f"Patient/{existing['id']}"),
        call("DELETE", f"Patient/{existing['id']}", ifMatch='W/"1"'),  # runs first: deletes v1
        {"request": {"method": "FETCH", "url": "Patient"}},
    ))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    # The DELETE ran before the PUT, so the PUT re-creates the deleted resource (201).
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "201 Created",
                        "204 No Content", "400 Bad Request"]
    bad_outcome = result["entry"][1]["response"]["outcome"]
    assert bad_outcome["issue"][0]["expression"] == ["Patient.birthDate"]
    assert "resource" not in result["entry"][1]
    assert "FETCH" in result["entry"][5]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert len(await by_identifier(client, good)) == 1
    assert await by_identifier(client, bad) == []
    history = (await client.get(f"Patient/{existing['id']}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "DELETE", "POST"]


async def test_batch_entries_may_not_depend_on_each_other(client: httpx.AsyncClient) -> None:
    patient_url = urn()
    response = await client.post("", json=bundle(
        "batch", post(patient(), patient_url), post(observation(patient_url))))
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "400 Bad Request"
    assert "transaction" in entries[1]["response"]["outcome"]["issue"][0]["diagnostics"]


async def test_batch_resolves_conditional_references(client: httpx.AsyncClient) -> None:
    value = unique("bcr")
    target = (await create(client, with_identifier(value))).json()
    response = await client.post("", json=bundle(
        "batch",
        post(observation(f"Patient?identifier={SYSTEM}|{value}")),
        post(observation(f"Patient?identifier={SYSTEM}|{unique('nobody')}")),
    ))
    first, second = response.json()["entry"]
    stored = (await client.get(f"Observation/{location_id(first)}")).json()
    assert stored["subject"]["reference"] == f"Patient/{target['id']}"
    assert second["response"]["status"] == "412 Precondition Failed"


async def test_batch_conditional_create_and_reads(client: httpx.AsyncClient) -> None:
    value = unique("bine")
    criteria = f"identifier={SYSTEM}|{value}"
    response = await client.post("", json=bundle(
        "batch",
        post(with_identifier(value), ifNoneExist=criteria),
        post(with_identifier(value), ifNoneExist=criteria),
        call("GET", f"Patient?{criteria}"),
    ))
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "200 OK", "200 OK"]
    assert location_id(entries[0]) == location_id(entries[1])
    search = entries[2]["resource"]
    assert search["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["entry"]
            if e["search"]["mode"] == "match"] == [location_id(entries[0])]


async def test_bundles_close_the_connection_when_several_processes_serve(
        database_url: str) -> None:
    """With several server processes a Bundle's answer says `Connection: close`, so the
    client's next Bundle goes to a process free to accept it; other answers keep the
    connection, and a single process keeps every connection."""
    for workers, expected in ((2, "close"), (1, None)):
        app = create_app(Settings(workers=workers), database_url)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://testserver/fhir/") as client:
                answer = await client.post("", json=bundle("batch", post(patient())))
                assert answer.status_code == 200, answer.text
                assert answer.json()["entry"][0]["response"]["status"] == "201 Created"
                assert answer.headers.get("connection") == expected
                created = answer.json()["entry"][0]["response"]["location"].split("/_history")[0]
                read = await client.get(created)
                assert read.status_code == 200
                assert "connection" not in read.headers
