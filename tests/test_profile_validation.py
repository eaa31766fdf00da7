"""Profile validation (StructureDefinition snapshots): on writes, in $validate, across processes.

Every profile here is a small hand-written StructureDefinition with a snapshot, posted to the
server like any resource; the cases check one feature each and the exact issue it yields.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.helpers import unique

from santong.api.app import create_app
from santong.settings import Settings
from santong.validation.profiles import ProfileSet, compile_profile, validate_against

BASE = f"http://example.org/fhir/{unique('ig')}"


def url(name: str) -> str:
    return f"{BASE}/StructureDefinition/{name}"


def vs_url(name: str) -> str:
    return f"{BASE}/ValueSet/{name}"


def element(eid: str, **spec: Any) -> dict[str, Any]:
    path = re.sub(r":[^.]+", "", eid)
    # What every snapshot element has (R4 invariants sdf-3 and sdf-8b).
    spec.setdefault("definition", f"{eid} (test)")
    spec.setdefault("base", {"path": path, "min": spec.get("min", 0),
                             "max": spec.get("max", "*")})
    return {"id": eid, "path": path, **spec}


def structure_definition(name: str, type_: str, elements: list[dict[str, Any]],
                         kind: str = "resource") -> dict[str, Any]:
    base = "http://hl7.org/fhir/StructureDefinition/" + type_
    return {
        "resourceType": "StructureDefinition", "url": url(name), "name": name.replace("-", ""),
        "status": "active", "kind": kind, "abstract": False, "type": type_,
        "baseDefinition": base, "derivation": "constraint",
        "snapshot": {"element": [element(type_, min=0, max="*"), *elements]},
    }


def many(eid: str, **spec: Any) -> dict[str, Any]:
    """An element whose base cardinality is 0..*."""
    return element(eid, base={"path": eid.split(":")[0], "min": 0, "max": "*"}, **spec)


def single(eid: str, **spec: Any) -> dict[str, Any]:
    """An element whose base cardinality is 0..1."""
    return element(eid, base={"path": eid.split(":")[0], "min": 0, "max": "1"}, **spec)


MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
MARRIED = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                       "code": "M"}]}

EXTENSION = structure_definition("nation", "Extension", [
    single("Extension.url", min=1, max="1", fixedUri=url("nation")),
    single("Extension.value[x]", min=1, max="1", type=[{"code": "string"}]),
], kind="complex-type")
EXTENSION["context"] = [{"type": "element", "expression": "Patient"}]  # sdf-5

PROFILES = [
    structure_definition("card", "Patient", [
        many("Patient.identifier", min=1, max="*"),
        many("Patient.name", min=0, max="1"),
        single("Patient.birthDate", min=1, max="1"),
    ]),
    structure_definition("fixed", "Patient", [
        single("Patient.gender", min=0, max="1", fixedCode="female"),
        single("Patient.maritalStatus", min=0, max="1", patternCodeableConcept=MARRIED),
    ]),
    structure_definition("value-closed", "Patient", [
        many("Patient.identifier", min=0, max="*", slicing={
            "discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}),
        many("Patient.identifier:mrn", sliceName="mrn", min=1, max="1"),
        single("Patient.identifier:mrn.system", min=1, max="1", fixedUri="urn:mrn"),
        many("Patient.identifier:ssn", sliceName="ssn", min=0, max="1"),
        single("Patient.identifier:ssn.system", min=1, max="1", fixedUri="urn:ssn"),
    ]),
    structure_definition("pattern-open", "Patient", [
        many("Patient.identifier", min=0, max="*", slicing={
            "discriminator": [{"type": "pattern", "path": "type"}], "rules": "open"}),
        many("Patient.identifier:mr", sliceName="mr", min=1, max="1"),
        single("Patient.identifier:mr.type", min=1, max="1", patternCodeableConcept=MR),
        single("Patient.identifier:mr.value", min=1, max="1"),
    ]),
    structure_definition("type-closed", "Observation", [
        single("Observation.value[x]", min=1, max="1",
               type=[{"code": "Quantity"}, {"code": "CodeableConcept"}, {"code": "string"}],
               slicing={"discriminator": [{"type": "type", "path": "$this"}],
                        "rules": "closed"}),
        single("Observation.value[x]:valueQuantity", sliceName="valueQuantity", min=0,
               max="1", type=[{"code": "Quantity"}]),
        single("Observation.value[x]:valueQuantity.unit", min=1, max="1"),
        single("Observation.value[x]:valueCodeableConcept", sliceName="valueCodeableConcept",
               min=0, max="1", type=[{"code": "CodeableConcept"}]),
    ]),
    structure_definition("extension", "Patient", [
        many("Patient.extension", min=0, max="*", slicing={
            "discriminator": [{"type": "value", "path": "url"}], "rules": "open"}),
        many("Patient.extension:nation", sliceName="nation", min=1, max="1",
             type=[{"code": "Extension", "profile": [url("nation")]}]),
    ]),
    structure_definition("binding", "Patient", [
        single("Patient.gender", min=0, max="1",
               binding={"strength": "required", "valueSet": vs_url("gender") + "|1.0"}),
        single("Patient.maritalStatus", min=0, max="1",
               binding={"strength": "required", "valueSet": vs_url("marital")}),
        many("Patient.communication", min=0, max="*"),
        single("Patient.communication.language", min=1, max="1",
               binding={"strength": "extensible", "valueSet": vs_url("language")}),
    ]),
    structure_definition("invariant", "Patient", [
        many("Patient.identifier", min=0, max="*", constraint=[{
            "key": "sant-3", "severity": "error", "human": "Identifier values are digits",
            "expression": "value.matches('^[0-9]+$')"}]),
    ]),
    EXTENSION,
]
# Root constraints: an error and a warning.
PROFILES[7]["snapshot"]["element"][0]["constraint"] = [
    {"key": "sant-1", "severity": "error", "human": "A name or an identifier is required",
     "expression": "name.exists() or identifier.exists()"},
    {"key": "sant-2", "severity": "warning", "human": "A birth date should be given",
     "expression": "birthDate.exists()"},
    # Inherited from the core specification: not evaluated again.
    {"key": "dom-2", "severity": "error", "human": "core",
     "expression": "false", "source": "http://hl7.org/fhir/StructureDefinition/DomainResource"},
]

VALUE_SETS = [
    {"resourceType": "ValueSet", "url": vs_url("gender"), "status": "active",
     "compose": {"include": [{"system": "http://hl7.org/fhir/administrative-gender",
                              "concept": [{"code": "male"}, {"code": "female"}]}]}},
    {"resourceType": "ValueSet", "url": vs_url("marital"), "status": "active",
     "compose": {"include": [{"valueSet": [vs_url("marital-base")]}],
                 "exclude": [{"system": "urn:ms", "concept": [{"code": "D"}]}]}},
    {"resourceType": "ValueSet", "url": vs_url("marital-base"), "status": "active",
     "compose": {"include": [{"system": "urn:ms"}]}},
    {"resourceType": "CodeSystem", "url": "urn:ms", "status": "active", "content": "complete",
     "concept": [{"code": "M"}, {"code": "S"}, {"code": "D"}]},
    {"resourceType": "ValueSet", "url": vs_url("language"), "status": "active",
     "compose": {"include": [{"system": "urn:ietf:bcp:47",
                              "concept": [{"code": "zh"}, {"code": "en"}]}]}},
]


@pytest.fixture(scope="module")
async def loaded(client: httpx.AsyncClient) -> AsyncIterator[None]:
    for resource in [*VALUE_SETS, *PROFILES]:
        response = await client.post(resource["resourceType"], json=resource)
        assert response.status_code == 201, response.text
    yield


def patient(profile: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "meta": {"profile": [url(profile)]}}
    resource.update(extra)
    return resource


def observation(profile: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "meta": {"profile": [url(profile)]},
            "status": "final", "code": {"text": "weight"}, **extra}


def ident(system: str, value: str = "1", **extra: Any) -> dict[str, Any]:
    return {"system": system, "value": value, **extra}


def nation(**value: Any) -> dict[str, Any]:
    return {"url": url("nation"), **(value or {"valueString": "汉"})}


# (case, resource, expected issues as (severity, code, expression, diagnostics fragment));
# [] means valid.
CASES: list[tuple[str, dict[str, Any], list[tuple[str, str, str, str]]]] = [
    ("card ok", patient("card", identifier=[ident("urn:a")], birthDate="2000-01-01"), []),
    ("card min", patient("card", birthDate="2000-01-01"),
     [("error", "required", "Patient.identifier", "Patient.identifier: minimum cardinality 1")]),
    ("card max", patient("card", identifier=[ident("urn:a")], birthDate="2000-01-01",
                         name=[{"family": "A"}, {"family": "B"}]),
     [("error", "structure", "Patient.name", "maximum cardinality 1, found 2")]),
    ("card primitive", patient("card", identifier=[ident("urn:a")]),
     [("error", "required", "Patient.birthDate", "Patient.birthDate: minimum cardinality 1")]),
    ("card primitive extension only", patient(
        "card", identifier=[ident("urn:a")], _birthDate={"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
            "valueCode": "unknown"}]}), []),
    ("fixed ok", patient("fixed", gender="female", maritalStatus={**MARRIED, "text": "m"}), []),
    ("fixed wrong", patient("fixed", gender="male"),
     [("error", "value", "Patient.gender", 'must be exactly "female"')]),
    ("pattern wrong", patient("fixed", maritalStatus={"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "S"}]}),
     [("error", "value", "Patient.maritalStatus", "must match the pattern")]),
    ("value slicing ok", patient("value-closed", identifier=[ident("urn:ssn"), ident("urn:mrn")]),
     []),
    ("value slicing closed", patient("value-closed",
                                     identifier=[ident("urn:mrn"), ident("urn:other")]),
     [("error", "structure", "Patient.identifier[1]", "matches none of the slices")]),
    ("value slicing slice min", patient("value-closed", identifier=[ident("urn:ssn")]),
     [("error", "required", "Patient.identifier", "(slice 'mrn'): minimum cardinality 1")]),
    ("value slicing slice max", patient("value-closed",
                                        identifier=[ident("urn:mrn"), ident("urn:mrn", "2")]),
     [("error", "structure", "Patient.identifier", "(slice 'mrn'): maximum cardinality 1")]),
    ("pattern slicing open ok", patient("pattern-open", identifier=[
        ident("urn:x"), ident("urn:y", type={**MR, "text": "MRN"})]), []),
    ("pattern slicing missing", patient("pattern-open", identifier=[ident("urn:x")]),
     [("error", "required", "Patient.identifier", "(slice 'mr'): minimum cardinality 1")]),
    ("pattern slice content", patient("pattern-open", identifier=[
        {"system": "urn:y", "type": MR}]),
     [("error", "required", "Patient.identifier[0].value", "minimum cardinality 1")]),
    ("type slicing ok", observation("type-closed", valueQuantity={"value": 1, "unit": "kg"}), []),
    ("type slicing slice content", observation("type-closed", valueQuantity={"value": 1}),
     [("error", "required", "Observation.valueQuantity.unit", "minimum cardinality 1")]),
    ("type slicing closed", observation("type-closed", valueString="heavy"),
     [("error", "structure", "Observation.valueString", "matches none of the slices")]),
    ("type not allowed", observation("type-closed", valueBoolean=True),
     [("error", "structure", "Observation.valueBoolean", "type boolean is not allowed"),
      ("error", "structure", "Observation.valueBoolean", "matches none of the slices")]),
    ("extension ok", patient("extension", extension=[nation()]), []),
    ("extension missing", patient("extension", extension=[{"url": "urn:other",
                                                            "valueString": "x"}]),
     [("error", "required", "Patient.extension", "(slice 'nation'): minimum cardinality 1")]),
    ("extension definition", patient("extension", extension=[nation(valueInteger=1)]),
     [("error", "structure", "Patient.extension[0].valueInteger", "type integer is not allowed")]),
    ("extension without value", patient("extension", extension=[{"url": url("nation")}]),
     [("error", "invariant", "Patient.extension[0]", "ext-1: Must have either extensions"),
      ("error", "required", "Patient.extension[0].value", "minimum cardinality 1")]),
    ("extension by url elsewhere", patient("card", identifier=[ident("urn:a", extension=[
        nation(valueBoolean=True)])], birthDate="2000-01-01"),
     [("error", "structure", "Patient.identifier[0].extension[0].valueBoolean", "not allowed")]),

    ("binding ok", patient("binding", gender="male", maritalStatus={"coding": [
        {"system": "urn:ms", "code": "S"}]}, communication=[{"language": {"coding": [
            {"system": "urn:ietf:bcp:47", "code": "zh"}]}}]), []),
    ("required binding code", patient("binding", gender="other"),
     [("error", "code-invalid", "Patient.gender", "other is not in the value set")]),
    ("required binding excluded", patient("binding", maritalStatus={"coding": [
        {"system": "urn:ms", "code": "D"}]}),
     [("error", "code-invalid", "Patient.maritalStatus", "urn:ms|D is not in the value set")]),
    ("extensible binding", patient("binding", communication=[{"language": {"coding": [
        {"system": "urn:ietf:bcp:47", "code": "fr"}]}}]),
     [("warning", "code-invalid", "Patient.communication[0].language", "binding extensible")]),
    ("invariant ok", patient("invariant", identifier=[ident("urn:a", "123")],
                             birthDate="2000-01-01"), []),
    ("invariant error", patient("invariant", birthDate="2000-01-01"),
     [("error", "invariant", "Patient", "sant-1: A name or an identifier is required")]),
    ("invariant warning", patient("invariant", name=[{"family": "A"}]),
     [("warning", "invariant", "Patient", "sant-2: A birth date should be given")]),
    ("invariant on element", patient("invariant", identifier=[ident("urn:a", "12a")],
                                     birthDate="2000-01-01"),
     [("error", "invariant", "Patient.identifier[0]", "sant-3: Identifier values are digits")]),
]


def _found(body: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(i["severity"], i["code"], (i.get("expression") or [""])[0], i["diagnostics"])
            for i in body["issue"]]


@pytest.mark.parametrize(("case", "resource", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_validate_case(client: httpx.AsyncClient, loaded: None, case: str,
                             resource: dict[str, Any],
                             expected: list[tuple[str, str, str, str]]) -> None:
    response = await client.post(f"{resource['resourceType']}/$validate", json=resource)
    assert response.status_code == 200, response.text
    found = _found(response.json())
    if not expected:
        assert found == [("information", "informational", "", "No issues detected")], found
        return
    assert len(found) == len(expected), found
    for (severity, code, expression, fragment), got in zip(expected, found, strict=True):
        assert got[:3] == (severity, code, expression), (case, found)
        assert fragment in got[3], (case, got)


async def test_write_time_hook(client: httpx.AsyncClient, loaded: None) -> None:
    bad = patient("card", birthDate="2000-01-01")
    response = await client.post("Patient", json=bad)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Patient.identifier"]
    assert "minimum cardinality 1" in issue["diagnostics"]
    # The same on update, and in a transaction entry.
    good = patient("card", identifier=[ident("urn:a")], birthDate="2000-01-01")
    created = await client.post("Patient", json=good)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    response = await client.put(f"Patient/{pid}", json={**bad, "id": pid})
    assert response.status_code == 422
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": bad, "request": {"method": "POST", "url": "Patient"}}]}
    response = await client.post("", json=bundle)
    assert response.status_code in (400, 422), response.text
    assert "minimum cardinality 1" in response.text
    # Warnings do not block a write.
    warned = patient("invariant", name=[{"family": "A"}])
    assert (await client.post("Patient", json=warned)).status_code == 201
    # A claimed profile the server does not know is ignored.
    unknown = patient("card")
    unknown["meta"]["profile"] = [url("never-loaded")]
    assert (await client.post("Patient", json=unknown)).status_code == 201
    # Extensible binding: warning only.
    extensible = patient("binding", communication=[{"language": {"coding": [
        {"system": "urn:ietf:bcp:47", "code": "fr"}]}}])
    assert (await client.post("Patient", json=extensible)).status_code == 201
    required = patient("binding", gender="other")
    assert (await client.post("Patient", json=required)).status_code == 422


async def test_runtime_profile_takes_effect_and_changes(client: httpx.AsyncClient) -> None:
    name = unique("rt")
    profile = structure_definition(name, "Patient", [
        single("Patient.birthDate", min=1, max="1")])
    resource = patient(name)
    assert (await client.post("Patient", json=resource)).status_code == 201  # not loaded yet
    created = await client.post("StructureDefinition", json=profile)
    assert created.status_code == 201
    sd_id = created.json()["id"]
    assert (await client.post("Patient", json=resource)).status_code == 422
    # Relaxed by an update: valid again at once.
    relaxed = structure_definition(name, "Patient", [
        single("Patient.birthDate", min=0, max="1", fixedDate="2000-01-01")])
    updated = await client.put(f"StructureDefinition/{sd_id}", json={**relaxed, "id": sd_id})
    assert updated.status_code == 200
    assert (await client.post("Patient", json=resource)).status_code == 201
    wrong = patient(name, birthDate="1999-01-01")
    assert (await client.post("Patient", json=wrong)).status_code == 422
    # Deleted: the claim is unknown again, so ignored.
    assert (await client.delete(f"StructureDefinition/{sd_id}")).status_code in (200, 204)
    assert (await client.post("Patient", json=wrong)).status_code == 201


async def test_runtime_profile_reaches_another_process(client: httpx.AsyncClient,
                                                       live_server: str) -> None:
    name = unique("lv")
    resource = patient(name)
    async with httpx.AsyncClient(base_url=f"{live_server}/fhir/") as other:
        assert (await other.post("Patient", json=resource)).status_code == 201
        profile = structure_definition(name, "Patient", [
            single("Patient.birthDate", min=1, max="1")])
        assert (await client.post("StructureDefinition", json=profile)).status_code == 201
        # The other process learns of it from NOTIFY, within moments.
        for _ in range(50):
            response = await other.post("Patient", json=resource)
            if response.status_code == 422:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the other process never applied the new profile")
        assert "Patient.birthDate: minimum cardinality 1" in response.text


async def test_validate_modes(client: httpx.AsyncClient, loaded: None) -> None:
    good = patient("card", identifier=[ident("urn:a")], birthDate="2000-01-01", gender="male")
    stored = await client.post("Patient", json=good)
    pid = stored.json()["id"]

    def issues(response: httpx.Response) -> list[tuple[str, str, str, str]]:
        assert response.status_code == 200, response.text
        return _found(response.json())

    # create (default) and update, by body and by Parameters.
    assert issues(await client.post("Patient/$validate", json=good))[0][0] == "information"
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {**good, "id": "other"}},
        {"name": "mode", "valueCode": "update"}]}
    found = issues(await client.post(f"Patient/{pid}/$validate", json=params))
    assert [f[:3] for f in found] == [("error", "invalid", "Patient.id")]
    params["parameter"][0]["resource"] = {**good, "id": pid}
    assert issues(await client.post(f"Patient/{pid}/$validate", json=params))[0][1] == (
        "informational")
    # profile as a parameter: the resource need not claim it.
    plain = {"resourceType": "Patient", "birthDate": "2000-01-01"}
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": plain},
        {"name": "profile", "valueUri": url("card")}]}
    found = issues(await client.post("Patient/$validate", json=params))
    assert [f[2] for f in found] == ["Patient.identifier"]
    found = issues(await client.post("Patient/$validate",
                                     params={"profile": url("never-loaded")}, json=plain))
    assert [f[:3] for f in found] == [("error", "not-supported", "profile")]
    # The stored resource, by GET (with a profile it does not claim).
    assert issues(await client.get(f"Patient/{pid}/$validate"))[0][0] == "information"
    found = issues(await client.get(f"Patient/{pid}/$validate",
                                    params={"profile": url("fixed")}))
    assert [f[:3] for f in found] == [("error", "value", "Patient.gender")]
    # delete: the resource must exist.
    found = issues(await client.post(f"Patient/{pid}/$validate", params={"mode": "delete"}))
    assert found[0][:2] == ("information", "informational")
    found = issues(await client.post("Patient/nope-404/$validate", params={"mode": "delete"}))
    assert found[0][:2] == ("error", "not-found")
    # Structural problems are reported too, still with 200.
    found = issues(await client.post("Patient/$validate",
                                     json={"resourceType": "Patient", "gender": 1}))
    assert found[0][:3] == ("error", "structure", "Patient.gender")
    # Requests that cannot be understood.
    assert (await client.post("Patient/$validate", params={"mode": "erase"},
                              json=plain)).status_code == 400
    assert (await client.post("Patient/$validate", params={"mode": "update"},
                              json=plain)).status_code == 400
    assert (await client.post("Patient/$validate", json={
        "resourceType": "Parameters", "parameter": []})).status_code == 400
    assert (await client.get("Patient/$validate")).status_code == 405


async def test_required_profiles_setting(database_url: str, client: httpx.AsyncClient,
                                         loaded: None) -> None:
    settings = Settings(required_profiles=f"Patient={url('card')},Device={url('absent')}")
    app = create_app(settings, database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://testserver/fhir/") as strict:
            plain = {"resourceType": "Patient", "birthDate": "2000-01-01"}
            response = await strict.post("Patient", json=plain)
            assert response.status_code == 422, response.text
            assert response.json()["issue"][0]["expression"] == ["Patient.identifier"]
            plain["identifier"] = [ident("urn:a")]
            assert (await strict.post("Patient", json=plain)).status_code == 201
            # A required profile that is not loaded refuses the write rather than skip it.
            response = await strict.post("Device", json={"resourceType": "Device"})
            assert response.status_code == 422
            assert "is not loaded" in response.text
            assert (await strict.post("Observation", json={
                "resourceType": "Observation", "status": "final",
                "code": {"text": "x"}})).status_code == 201
    # The shared app is not affected by the other's setting.
    assert (await client.post("Patient", json={"resourceType": "Patient"})).status_code == 201


def test_profile_compiled_once_and_fast() -> None:
    """A profiled Patient (slicing, fixed, binding, invariant, extension) in well under 1 ms."""
    elements = [
        *PROFILES[2]["snapshot"]["element"][1:],  # identifier slicing
        single("Patient.gender", min=1, max="1", binding={
            "strength": "required", "valueSet": vs_url("gender")}),
        many("Patient.name", min=1, max="*", constraint=[{
            "key": "sant-9", "severity": "error", "human": "family or given",
            "expression": "family.exists() or given.exists()"}]),
        *PROFILES[5]["snapshot"]["element"][1:],  # extension slice
    ]
    profile = compile_profile(structure_definition("perf", "Patient", elements))
    ext = compile_profile(EXTENSION)
    from santong.validation.valuesets import expand
    codes = {vs_url("gender"): expand(VALUE_SETS[0], lambda u: None, lambda u: None)}
    profiles = ProfileSet({profile.url: profile, ext.url: ext}, codes, {}, True)
    resource = {"resourceType": "Patient", "meta": {"profile": [profile.url]},
                "identifier": [ident("urn:mrn", "42"), ident("urn:ssn", "7")],
                "name": [{"family": "张", "given": ["三"]}], "gender": "male",
                "birthDate": "1970-01-01", "extension": [nation()]}
    assert validate_against(resource, [profile], profiles) == []
    resource_bad = {**resource, "gender": "other"}
    assert [i.expression for i in validate_against(resource_bad, [profile], profiles)] == [
        "Patient.gender"]
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        validate_against(resource, [profile], profiles)
    per_run = (time.perf_counter() - started) / runs
    assert per_run < 1e-3, f"{per_run * 1e6:.0f} µs"
