"""create, read, vread, update, delete and history on real PostgreSQL, with the HL7 examples."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.helpers import create, patient, unique, without_meta

EXAMPLES = [Path(__file__).parent / "fixtures" / "r4" / f"{t}-example.json"
            for t in ("Patient", "Encounter", "ServiceRequest", "CarePlan")]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_hl7_example_round_trip(client: httpx.AsyncClient, path: Path) -> None:
    example = json.loads(path.read_text())
    resource_type = example["resourceType"]
    example["id"] = unique("ex")
    example.pop("meta", None)

    # update-as-create with the client's id
    created = await client.put(f"{resource_type}/{example['id']}", json=example)
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"].endswith(f"/{resource_type}/{example['id']}/_history/1")

    read = await client.get(f"{resource_type}/{example['id']}")
    assert read.status_code == 200
    first = read.json()
    assert without_meta(first) == example
    assert first["meta"]["versionId"] == "1"
    assert "lastUpdated" in first["meta"]

    changed = {**first, "language": "zh-CN"}
    updated = await client.put(f"{resource_type}/{example['id']}", json=changed)
    assert updated.status_code == 200, updated.text
    assert updated.headers["ETag"] == 'W/"2"'
    assert updated.json()["meta"]["versionId"] == "2"

    v1 = await client.get(f"{resource_type}/{example['id']}/_history/1")
    v2 = await client.get(f"{resource_type}/{example['id']}/_history/2")
    assert v1.status_code == v2.status_code == 200
    assert without_meta(v1.json()) == example
    assert v2.json()["language"] == "zh-CN"
    assert v1.headers["ETag"] == 'W/"1"' and v2.headers["ETag"] == 'W/"2"'

    history = (await client.get(f"{resource_type}/{example['id']}/_history")).json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT"]


async def test_create_assigns_id_and_meta(client: httpx.AsyncClient) -> None:
    resource = patient(id="client-chosen", meta={"versionId": "99", "profile": ["http://x/p"]})
    response = await create(client, resource)
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["profile"] == ["http://x/p"]
    assert response.headers["Location"] == (
        f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    )
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    # Everything else reads back exactly as written, in the client's key order.
    read = await client.get(f"Patient/{body['id']}")
    assert list(read.json()) == ["resourceType", "id", "meta", "identifier", "name", "gender",
                                 "birthDate"]
    assert read.json()["name"] == resource["name"]


async def test_decimal_precision_is_preserved(client: httpx.AsyncClient) -> None:
    body = (b'{"resourceType":"Observation","status":"final","code":{"text":"BP"},'
            b'"valueQuantity":{"value":120.50,"unit":"mmHg"},'
            b'"referenceRange":[{"low":{"value":1.0E2},"high":{"value":0.1234567890123456789}},'
            b'{"low":{"value":123456789012345678901234567890}}]}')
    response = await client.post("Observation", content=body,
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 201, response.text
    read = await client.get(f"Observation/{response.json()['id']}")
    assert b'"value":120.50' in read.content
    assert b'"value":1.0E2' in read.content
    assert b'"value":0.1234567890123456789' in read.content
    assert b'"value":123456789012345678901234567890' in read.content


async def test_delete_then_read_gives_410_and_history_keeps_versions(
    client: httpx.AsyncClient,
) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    deleted = await client.delete(url)
    assert deleted.status_code == 204
    assert deleted.headers["ETag"] == 'W/"2"'
    gone = await client.get(url)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    # Deleting again changes nothing.
    again = await client.delete(url)
    assert again.status_code == 204
    assert again.headers["ETag"] == 'W/"2"'
    assert (await client.get(f"{url}/_history/2")).status_code == 410
    assert (await client.get(f"{url}/_history/1")).status_code == 200
    history = (await client.get(f"{url}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    # Writing it again revives it as version 3.
    revived = await client.put(url, json={**created, "active": True})
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


async def test_delete_unknown_resource_is_idempotent(client: httpx.AsyncClient) -> None:
    assert (await client.delete(f"Patient/{unique()}")).status_code == 204
    prefer = await client.delete(f"Patient/{unique()}",
                                 headers={"Prefer": "return=OperationOutcome"})
    assert prefer.status_code == 200
    assert prefer.json()["resourceType"] == "OperationOutcome"


async def test_read_and_vread_unknown(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"Patient/{unique()}")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    created = (await create(client, patient())).json()
    for version in ("2", "abc", "0"):
        response = await client.get(f"Patient/{created['id']}/_history/{version}")
        assert response.status_code == 404, version


async def test_head_read(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    head = await client.head(f"Patient/{created['id']}")
    assert head.status_code == 200
    assert head.headers["ETag"] == 'W/"1"'
    assert head.content == b""


async def test_stored_text_reads_back_byte_for_byte(client: httpx.AsyncClient) -> None:
    """Stored JSON goes out as its UTF-8 bytes (read from PostgreSQL as bytes, never decoded):
    characters beyond the BMP, escapes and non-ASCII text come back as they were written, by
    read, vread, search, history and `_include` alike."""
    family = unique("𠀀郑")  # CJK Extension B: four bytes in UTF-8
    text = 'quote " backslash \\ tab \t 心悸 😀 \u2028'
    created = (await create(client, {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["明"], "text": text}]})).json()
    encounter = (await create(client, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{created['id']}"}})).json()
    written = json.dumps(created["name"], ensure_ascii=False, separators=(",", ":")).encode()
    responses = [
        await client.get(f"Patient/{created['id']}"),
        await client.get(f"Patient/{created['id']}/_history/1"),
        await client.get("Patient", params={"family": family}),
        await client.get(f"Patient/{created['id']}/_history"),
        await client.get("Encounter", params={"_id": encounter["id"],
                                              "_include": "Encounter:subject"}),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        assert written in response.content, response.content[:400]
    found = [e["resource"] for e in responses[2].json()["entry"]]
    assert [r["name"] for r in found] == [created["name"]]
    assert created["name"][0]["text"] == text
