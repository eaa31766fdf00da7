"""PATCH with JSON Patch (RFC 6902) and the interaction's rules (http.html#patch)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest
from tests.helpers import create, patient, unique
from tests.test_transaction import SYSTEM, bundle, with_identifier

from santong.fhir.interactions.patch import apply_json_patch
from santong.fhir.outcome import FhirError

JSON_PATCH = {"Content-Type": "application/json-patch+json"}

# RFC 6902 Appendix A: (document, patch, expected result).
RFC_EXAMPLES: list[tuple[str, Any, list[dict[str, Any]], Any]] = [
    ("A.1 add an object member", {"foo": "bar"},
     [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    ("A.2 add an array element", {"foo": ["bar", "baz"]},
     [{"op": "add", "path": "/foo/1", "value": "qux"}], {"foo": ["bar", "qux", "baz"]}),
    ("A.3 remove an object member", {"baz": "qux", "foo": "bar"},
     [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ("A.4 remove an array element", {"foo": ["bar", "qux", "baz"]},
     [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    ("A.5 replace a value", {"baz": "qux", "foo": "bar"},
     [{"op": "replace", "path": "/baz", "value": "boo"}], {"baz": "boo", "foo": "bar"}),
    ("A.6 move a value", {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ("A.7 move an array element", {"foo": ["all", "grass", "cows", "eat"]},
     [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
     {"foo": ["all", "cows", "eat", "grass"]}),
    ("A.8 test a value: success", {"baz": "qux", "foo": ["a", 2, "c"]},
     [{"op": "test", "path": "/baz", "value": "qux"},
      {"op": "test", "path": "/foo/1", "value": 2}], {"baz": "qux", "foo": ["a", 2, "c"]}),
    ("A.10 add a nested member object", {"foo": "bar"},
     [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
     {"foo": "bar", "child": {"grandchild": {}}}),
    ("A.11 ignore unrecognized elements", {"foo": "bar"},
     [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}], {"foo": "bar", "baz": "qux"}),
    ("A.14 ~ escape ordering", {"/": 9, "~1": 10},
     [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    ("A.16 add an array value", {"foo": ["bar"]},
     [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
     {"foo": ["bar", ["abc", "def"]]}),
    ("copy (4.5)", {"foo": {"bar": 1}},
     [{"op": "copy", "from": "/foo", "path": "/baz"}], {"foo": {"bar": 1}, "baz": {"bar": 1}}),
]

# RFC 6902 Appendix A error cases and other malformed patches: (name, document, patch, status).
RFC_ERRORS: list[tuple[str, Any, Any, int]] = [
    ("A.9 test a value: error", {"baz": "qux"},
     [{"op": "test", "path": "/baz", "value": "bar"}], 409),
    ("A.12 add to a nonexistent target", {"foo": "bar"},
     [{"op": "add", "path": "/baz/bat", "value": "qux"}], 409),
    ("A.15 comparing strings and numbers", {"/": 9, "~1": 10},
     [{"op": "test", "path": "/~01", "value": "10"}], 409),
    ("remove a missing member", {"foo": "bar"}, [{"op": "remove", "path": "/baz"}], 409),
    ("array index out of range", {"foo": ["bar"]},
     [{"op": "add", "path": "/foo/5", "value": 1}], 409),
    ("move into its own child", {"foo": {"bar": 1}},
     [{"op": "move", "from": "/foo", "path": "/foo/bar/x"}], 409),
    ("unknown operation", {"foo": "bar"}, [{"op": "frobnicate", "path": "/foo"}], 400),
    ("missing path", {"foo": "bar"}, [{"op": "add", "value": 1}], 400),
    ("missing value", {"foo": "bar"}, [{"op": "add", "path": "/x"}], 400),
    ("missing from", {"foo": "bar"}, [{"op": "copy", "path": "/x"}], 400),
    ("pointer without a leading slash", {"foo": "bar"},
     [{"op": "replace", "path": "foo", "value": 1}], 400),
    ("not an array of operations", {"foo": "bar"}, {"op": "add", "path": "/x", "value": 1}, 400),
]


@pytest.mark.parametrize(("name", "document", "operations", "expected"), RFC_EXAMPLES,
                         ids=[e[0] for e in RFC_EXAMPLES])
def test_rfc6902_examples(name: str, document: Any, operations: Any, expected: Any) -> None:
    assert apply_json_patch(document, operations) == expected


@pytest.mark.parametrize(("name", "document", "operations", "status"), RFC_ERRORS,
                         ids=[e[0] for e in RFC_ERRORS])
def test_rfc6902_errors(name: str, document: Any, operations: Any, status: int) -> None:
    with pytest.raises(FhirError) as raised:
        apply_json_patch(document, operations)
    assert raised.value.status == status


async def patch_json(client: httpx.AsyncClient, url: str, operations: Any,
                     **headers: str) -> httpx.Response:
    return await client.patch(url, content=orjson.dumps(operations),
                              headers={**JSON_PATCH, **headers})


async def test_json_patch_on_an_instance(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(patient(
        name=[{"family": "张", "given": ["三", "四"]}], multipleBirthInteger=2,
        extension=[{"url": "http://example.org/weight", "valueDecimal": 1.25}]))
    created = (await client.post("Patient", content=body.replace(b"1.25", b"1.50"),
                                 headers={"Content-Type": "application/fhir+json"})).json()
    url = f"Patient/{created['id']}"
    response = await patch_json(client, url, [
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "五"},
        {"op": "remove", "path": "/name/0/given/0"},
        {"op": "move", "from": "/multipleBirthInteger", "path": "/multipleBirthInteger"},
        {"op": "copy", "from": "/name/0", "path": "/name/-"},
        {"op": "add", "path": "/active", "value": True},
    ])
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    patched = response.json()
    assert patched["gender"] == "female"
    assert patched["name"] == [{"family": "张", "given": ["四", "五"]}] * 2
    assert patched["active"] is True
    assert patched["meta"]["versionId"] == "2"
    raw = (await client.get(url)).content
    assert b'"valueDecimal":1.50' in raw  # untouched decimals keep their precision
    history = (await client.get(f"{url}/_history")).json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


async def test_failed_or_invalid_patches_change_nothing(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    cases = [
        ([{"op": "test", "path": "/gender", "value": "female"}], 409, None),
        ([{"op": "add", "path": "/colour", "value": "blue"}], 400, "Patient.colour"),
        ([{"op": "replace", "path": "/birthDate", "value": "1970-02-30"}], 400,
         "Patient.birthDate"),
        ([{"op": "add", "path": "/name/0/given", "value": "四"}], 400, "Patient.name[0].given"),
        ([{"op": "replace", "path": "/id", "value": "other"}], 422, "Patient.id"),
        ([{"op": "remove", "path": "/nothing"}], 409, None),
    ]
    for operations, status, expression in cases:
        response = await patch_json(client, url, operations)
        assert response.status_code == status, (operations, response.text)
        issues = response.json()["issue"]
        if expression:
            assert expression in [e for i in issues for e in i.get("expression", [])]
    still = (await client.get(url)).json()
    assert still["meta"]["versionId"] == "1"
    assert still["gender"] == "male"
    not_json = await client.patch(url, content=b"[{", headers=JSON_PATCH)
    assert not_json.status_code == 400
    xml = await client.patch(url, content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415


async def test_if_match_and_missing_resources(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    change = [{"op": "replace", "path": "/gender", "value": "female"}]
    assert (await patch_json(client, url, change, **{"If-Match": 'W/"2"'})).status_code == 412
    ok = await patch_json(client, url, change, **{"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    missing = await patch_json(client, f"Patient/{unique('none')}", change)
    assert missing.status_code == 404
    await client.delete(url)
    assert (await patch_json(client, url, change)).status_code == 410


async def test_conditional_patch(client: httpx.AsyncClient) -> None:
    value = unique("cp")
    created = (await create(client, with_identifier(value))).json()
    criteria = f"Patient?identifier={SYSTEM}|{value}"
    change = [{"op": "replace", "path": "/gender", "value": "other"}]
    ok = await patch_json(client, criteria, change)
    assert ok.status_code == 200, ok.text
    assert ok.json()["id"] == created["id"] and ok.json()["gender"] == "other"
    none = await patch_json(client, f"Patient?identifier={SYSTEM}|{unique('no')}", change)
    assert none.status_code == 404
    await create(client, with_identifier(value))
    assert (await patch_json(client, criteria, change)).status_code == 412


async def test_patch_in_bundles(client: httpx.AsyncClient) -> None:
    first = (await create(client, patient())).json()
    second = (await create(client, patient())).json()
    operations = [{"op": "replace", "path": "/gender", "value": "female"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(orjson.dumps(operations)).decode()}
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "other"}]}]}
    response = await client.post("", json=bundle(
        "transaction",
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}},
        {"resource": fhirpath, "request": {"method": "PATCH", "url": f"Patient/{second['id']}",
                                           "ifMatch": 'W/"1"'}},
    ))
    assert response.status_code == 200, response.text
    assert [e["resource"]["gender"] for e in response.json()["entry"]] == ["female", "other"]
    # A failing patch rolls the transaction back.
    bad = {**binary, "data": base64.b64encode(orjson.dumps(
        [{"op": "test", "path": "/gender", "value": "male"}])).decode()}
    failed = await client.post("", json=bundle(
        "transaction",
        {"resource": fhirpath, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}},
        {"resource": bad, "request": {"method": "PATCH", "url": f"Patient/{second['id']}"}},
    ))
    assert failed.status_code == 409
    assert failed.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert (await client.get(f"Patient/{first['id']}")).json()["gender"] == "female"
    # In a batch, only that entry fails.
    batch = await client.post("", json=bundle(
        "batch",
        {"resource": fhirpath, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}},
        {"resource": bad, "request": {"method": "PATCH", "url": f"Patient/{second['id']}"}},
    ))
    assert [e["response"]["status"] for e in batch.json()["entry"]] == ["200 OK",
                                                                        "409 Conflict"]
    assert (await client.get(f"Patient/{first['id']}")).json()["gender"] == "other"


async def test_patches_in_a_transaction_have_their_references_rewritten(
    client: httpx.AsyncClient,
) -> None:
    """A JSON Patch Binary's base64 and a FHIRPath Patch's values may point at other entries
    (fullUrls) or use conditional references: they are rewritten like any entry's."""
    first = (await create(client, patient())).json()
    second = (await create(client, patient())).json()
    value = unique("gp")
    known = (await create(client, with_identifier(value))).json()
    practitioner = "urn:uuid:" + unique("p").replace("-", "")[:8] + "-0000-4000-8000-000000000000"
    operations = [
        {"op": "add", "path": "/generalPractitioner", "value": [{"reference": practitioner}]},
        {"op": "add", "path": "/link", "value": [{"type": "seealso", "other": {
            "reference": f"Patient?identifier={SYSTEM}|{value}"}}]},
    ]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(orjson.dumps(operations)).decode()}
    # A string written to a `…/reference` path is a reference too.
    replace = [{"op": "replace", "path": "/generalPractitioner/0/reference",
                "value": practitioner}]
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "generalPractitioner"},
        {"name": "value", "valueReference": {"reference": practitioner}}]}]}
    response = await client.post("", json=bundle(
        "transaction",
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}},
        {"resource": fhirpath, "request": {"method": "PATCH", "url": f"Patient/{second['id']}"}},
        {"fullUrl": practitioner, "resource": {"resourceType": "Practitioner"},
         "request": {"method": "POST", "url": "Practitioner"}},
    ))
    assert response.status_code == 200, response.text
    practitioner_id = response.json()["entry"][2]["response"]["location"].split("/")[-3]
    patched = (await client.get(f"Patient/{first['id']}")).json()
    assert patched["generalPractitioner"] == [{"reference": f"Practitioner/{practitioner_id}"}]
    assert patched["link"][0]["other"] == {"reference": f"Patient/{known['id']}"}
    other = (await client.get(f"Patient/{second['id']}")).json()
    assert other["generalPractitioner"] == [{"reference": f"Practitioner/{practitioner_id}"}]

    again = {**binary, "data": base64.b64encode(orjson.dumps(replace)).decode()}
    response = await client.post("", json=bundle(
        "transaction",
        {"resource": again, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}},
        {"fullUrl": practitioner, "resource": {"resourceType": "Practitioner"},
         "request": {"method": "POST", "url": "Practitioner"}},
    ))
    assert response.status_code == 200, response.text
    newer = response.json()["entry"][1]["response"]["location"].split("/")[-3]
    assert newer != practitioner_id
    patched = (await client.get(f"Patient/{first['id']}")).json()
    assert patched["generalPractitioner"] == [{"reference": f"Practitioner/{newer}"}]

    # A placeholder that names no entry fails, as in any entry; in a batch, a placeholder
    # inside a patch is that entry's error.
    failed = await client.post("", json=bundle(
        "transaction",
        {"resource": again, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}}))
    assert failed.status_code == 400
    assert failed.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    batch = await client.post("", json=bundle(
        "batch",
        {"resource": again, "request": {"method": "PATCH", "url": f"Patient/{first['id']}"}},
        {"fullUrl": practitioner, "resource": {"resourceType": "Practitioner"},
         "request": {"method": "POST", "url": "Practitioner"}}))
    assert [e["response"]["status"] for e in batch.json()["entry"]] == ["400 Bad Request",
                                                                        "201 Created"]
