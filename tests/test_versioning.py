"""Version-aware updates and conditional reads (http://hl7.org/fhir/R4/http.html#concurrency)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import httpx
import orjson
from tests.helpers import create, patient


async def test_if_match_update_and_delete(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    stale = await client.put(url, json=created, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    ok = await client.put(url, json={**created, "active": False}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert ok.headers["ETag"] == 'W/"2"'
    assert (await client.delete(url, headers={"If-Match": 'W/"1"'})).status_code == 412
    assert (await client.get(url)).status_code == 200
    assert (await client.delete(url, headers={"If-Match": 'W/"2"'})).status_code == 204


async def test_if_match_on_missing_resource_is_412(client: httpx.AsyncClient) -> None:
    resource = patient(id="never-there-" + patient()["identifier"][0]["value"])
    response = await client.put(f"Patient/{resource['id']}", json=resource,
                                headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert (await client.get(f"Patient/{resource['id']}")).status_code == 404


async def test_if_none_match_star_only_creates(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.put(f"Patient/{created['id']}", json=created,
                                headers={"If-None-Match": "*"})
    assert response.status_code == 412


async def test_conditional_read(client: httpx.AsyncClient) -> None:
    created = await create(client, patient())
    url = f"Patient/{created.json()['id']}"
    same = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["ETag"] == 'W/"1"'
    other = await client.get(url, headers={"If-None-Match": 'W/"0"'})
    assert other.status_code == 200
    modified = parsedate_to_datetime(created.headers["Last-Modified"])
    later = format_datetime(modified + timedelta(seconds=5), usegmt=True)
    earlier = format_datetime(modified - timedelta(seconds=5), usegmt=True)
    assert (await client.get(url, headers={"If-Modified-Since": later})).status_code == 304
    assert (await client.get(url, headers={"If-Modified-Since": earlier})).status_code == 200


async def test_concurrent_updates_never_lose_a_write(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    writers = 8

    async def update(n: int) -> httpx.Response:
        return await client.put(url, json={**created, "birthDate": f"19{n:02d}-01-01"})

    responses = await asyncio.gather(*(update(n) for n in range(writers)))
    assert sorted(r.status_code for r in responses) == [200] * writers
    versions = sorted(int(r.json()["meta"]["versionId"]) for r in responses)
    assert versions == list(range(2, writers + 2))
    history = (await client.get(f"{url}/_history", params={"_count": 100})).json()
    assert len(history["entry"]) == writers + 1
    written = {e["resource"]["birthDate"] for e in history["entry"][:-1]}
    assert written == {f"19{n:02d}-01-01" for n in range(writers)}


async def test_concurrent_if_match_updates_have_one_winner(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"

    async def update(n: int) -> httpx.Response:
        return await client.put(url, json={**created, "birthDate": f"19{n:02d}-01-01"},
                                 headers={"If-Match": 'W/"1"'})

    responses = await asyncio.gather(*(update(n) for n in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 5
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"


async def test_concurrent_update_as_create_of_one_id(client: httpx.AsyncClient) -> None:
    resource = patient(id="race-" + patient()["identifier"][0]["value"])
    # Each body differs: an unchanged PUT would write no version.
    responses = await asyncio.gather(*(client.put(
        f"Patient/{resource['id']}", json={**resource, "birthDate": f"199{n}-01-01"})
        for n in range(5)))
    assert sorted(r.status_code for r in responses) == [200] * 4 + [201]
    assert (await client.get(f"Patient/{resource['id']}")).json()["meta"]["versionId"] == "5"


async def test_an_unchanged_update_writes_no_version(client: httpx.AsyncClient) -> None:
    """A PUT or PATCH that changes nothing answers the current version and writes none (as
    HAPI FHIR and Medplum do); meta.versionId and lastUpdated in the body do not count, any
    other change does, and re-creating a deleted resource is a change."""
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    body = {**created, "meta": {**created["meta"], "versionId": "7",
                                "lastUpdated": "2001-01-01T00:00:00Z"}}
    same = await client.put(url, json=body)
    assert same.status_code == 200
    assert same.headers["ETag"] == 'W/"1"'
    assert same.json()["meta"] == created["meta"]
    patched = await client.patch(url, content=orjson.dumps(
        [{"op": "replace", "path": "/gender", "value": created["gender"]}]),
        headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200 and patched.headers["ETag"] == 'W/"1"'
    history = (await client.get(f"{url}/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["1"]

    tagged = {**created, "meta": {"tag": [{"system": "urn:t", "code": "x"}]}}
    assert (await client.put(url, json=tagged)).headers["ETag"] == 'W/"2"'
    assert (await client.put(url, json=tagged)).headers["ETag"] == 'W/"2"'
    assert (await client.put(url, json={**tagged, "active": False})).headers["ETag"] == 'W/"3"'
    assert (await client.delete(url)).status_code in (200, 204)
    revived = await client.put(url, json={**tagged, "active": False})
    assert revived.status_code == 201 and revived.headers["ETag"] == 'W/"5"'


async def test_a_change_of_decimal_precision_is_a_change(client: httpx.AsyncClient) -> None:
    """1.5 and 1.50 are different FHIR decimals (datatypes.html#decimal): the no-op check
    compares numbers by their text."""
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "体温"},
                   "valueQuantity": {"value": 1.5, "unit": "mmol/L"}}
    created = (await create(client, observation)).json()
    url = f"Observation/{created['id']}"

    async def put(value: bytes) -> httpx.Response:
        body = orjson.dumps({**created, "valueQuantity": {"value": 0, "unit": "mmol/L"}})
        return await client.put(url, content=body.replace(b'"value":0', b'"value":' + value),
                                headers={"Content-Type": "application/fhir+json"})

    assert (await put(b"1.5")).headers["ETag"] == 'W/"1"'
    precise = await put(b"1.50")
    assert precise.headers["ETag"] == 'W/"2"', precise.text
    assert b'"value":1.50' in (await client.get(url)).content
    assert (await put(b"1.50")).headers["ETag"] == 'W/"2"'
    assert (await put(b"1.5")).headers["ETag"] == 'W/"3"'



async def test_the_same_decimal_written_compactly_or_spaced_is_no_change(
        client: httpx.AsyncClient) -> None:
    """`1.5e-7` is read as a plain float from a compact body and checked digit by digit from
    one with spaces: the no-op check sees the same text either way (as orjson writes it)."""
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "血糖"},
                   "valueQuantity": {"value": 0, "unit": "mol/L"}}
    created = (await create(client, observation)).json()
    url = f"Observation/{created['id']}"
    compact = orjson.dumps(created).replace(b'"value":0', b'"value":1.5e-7')
    headers = {"Content-Type": "application/fhir+json"}
    first = await client.put(url, content=compact, headers=headers)
    assert first.headers["ETag"] == 'W/"2"', first.text
    spaced = compact.replace(b'"value":1.5e-7', b'"value": 1.5e-7 ')
    assert (await client.put(url, content=spaced, headers=headers)).headers["ETag"] == 'W/"2"'
    assert b'"value":1.5e-7' in (await client.get(url)).content
