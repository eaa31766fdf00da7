"""The bundled FHIR package (fhir_profiles/) is stored in the database at start-up and used:
profiles on writes and in $validate, its terminology, its SearchParameters; installing is
idempotent and safe when processes start together; the guide's examples validate."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers import unique

from santong import packages
from santong.api.app import create_app
from santong.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fhir_profiles"
EXAMPLES = sorted((PACKAGE / "example").glob("*.json"))
LOCAL = "http://santong.example.org/fhir"
NATIONAL_ID = "urn:oid:2.16.156.10011.1.3"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_bundled_package_is_found() -> None:
    assert packages.bundled_package_dir() == PACKAGE
    package = packages.read_package(PACKAGE)
    assert package.name == "santong.fhir.three-connections"
    kinds = {r["resourceType"] for r in package.resources}
    assert {"StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap", "SearchParameter",
            "NamingSystem", "ImplementationGuide"} <= kinds
    # examples are not conformance resources
    assert all("example" not in r["id"] for r in package.resources)


def test_settings_choose_the_folders(tmp_path: Path) -> None:
    assert packages.configured_folders(Settings()) == [PACKAGE]
    assert packages.configured_folders(Settings(load_bundled_package=False)) == []
    assert packages.configured_folders(Settings(load_bundled_package=False,
                                                profiles_dir=tmp_path)) == [tmp_path]


async def test_stored_at_start_up_and_used(client: httpx.AsyncClient) -> None:
    profile = (await client.get("StructureDefinition/santong-patient")).json()
    assert profile["url"] == f"{LOCAL}/StructureDefinition/santong-patient"
    assert (await client.get("NamingSystem/national-id")).status_code == 200
    found = (await client.get("SearchParameter", params={
        "url": f"{LOCAL}/SearchParameter/patient-national-id"})).json()
    assert len(found["entry"]) == 1
    # terminology: the GB/T 2261.1 sex codes, and their map to administrative-gender
    expanded = (await client.get("ValueSet/$expand", params={
        "url": f"{LOCAL}/ValueSet/gb2261-1"})).json()
    assert {c["code"] for c in expanded["expansion"]["contains"]} >= {"1", "2"}
    translated = (await client.get("ConceptMap/$translate", params={
        "system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "2",
        "target": "http://hl7.org/fhir/ValueSet/administrative-gender"})).json()
    assert translated["parameter"][0]["valueBoolean"] is True, translated
    # the package's SearchParameter is indexed and searchable
    example = _load(PACKAGE / "example" / "Patient-example-wang-guiying.json")
    nid = next(i["value"] for i in example["identifier"] if i["system"] == NATIONAL_ID)
    patient = {**{k: v for k, v in example.items() if k not in ("id", "meta")},
               "identifier": [{"system": NATIONAL_ID, "value": nid}]}
    created = (await client.post("Patient", json=patient)).json()
    hits = (await client.get("Patient", params={"national-id": nid})).json()
    assert created["id"] in [e["resource"]["id"] for e in hits["entry"]]


async def test_a_claimed_package_profile_is_enforced_on_write(
        client: httpx.AsyncClient) -> None:
    example = _load(PACKAGE / "example" / "Patient-example-wang-guiying.json")
    good = {k: v for k, v in example.items() if k != "id"}
    assert (await client.post("Patient", json=good)).status_code == 201
    nid = next(i for i in good["identifier"] if i["system"] == NATIONAL_ID)
    bad = copy.deepcopy(good)
    for identifier in bad["identifier"]:
        if identifier["system"] == NATIONAL_ID:  # a wrong GB 11643 check character
            identifier["value"] = nid["value"][:-1] + ("0" if nid["value"][-1] != "0" else "1")
    response = await client.post("Patient", json=bad)
    assert response.status_code == 422, response.text
    assert "cn-pat-1" in response.text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_example_validates_against_the_loaded_package(client: httpx.AsyncClient,
                                                            path: Path) -> None:
    example = _load(path)
    response = await client.post(f"{example['resourceType']}/$validate", json=example)
    assert response.status_code == 200, response.text
    issues = response.json()["issue"]
    assert [i for i in issues if i["severity"] in ("error", "fatal")] == [], issues


async def test_installing_again_changes_nothing(client: httpx.AsyncClient, database_url: str
                                                ) -> None:
    before = (await client.get("StructureDefinition/santong-patient")).json()["meta"]
    app = create_app(Settings(), database_url)  # a second process starting on the database
    async with app.router.lifespan_context(app):
        result = await packages.install(app.state.router, PACKAGE)
    assert result.written == []
    assert result.unchanged == len(packages.read_package(PACKAGE).resources)
    after = (await client.get("StructureDefinition/santong-patient")).json()["meta"]
    assert after == before


def _small_package(folder: Path, tag: str) -> list[dict[str, Any]]:
    """Two resources with urls and ids of their own, as a package folder."""
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps({"name": f"test.{tag}", "version": "1.0"}))
    code_system = {"resourceType": "CodeSystem", "id": f"cs-{tag}",
                   "url": f"http://example.org/{tag}/cs", "version": "1.0", "status": "active",
                   "content": "complete", "concept": [{"code": "a"}, {"code": "b"}]}
    value_set = {"resourceType": "ValueSet", "id": f"vs-{tag}",
                 "url": f"http://example.org/{tag}/vs", "version": "1.0", "status": "active",
                 "compose": {"include": [{"system": code_system["url"]}]}}
    for resource in (code_system, value_set):
        (folder / f"{resource['resourceType']}-{resource['id']}.json").write_text(
            json.dumps(resource))
    return [code_system, value_set]


async def test_processes_starting_together_store_each_resource_once(
        client: httpx.AsyncClient, database_url: str, tmp_path: Path) -> None:
    tag = unique("pk")
    resources = _small_package(tmp_path / "pkg", tag)
    first, second = create_app(Settings(), database_url), create_app(Settings(), database_url)
    async with first.router.lifespan_context(first), \
            second.router.lifespan_context(second):
        results = await asyncio.gather(
            packages.install(first.state.router, tmp_path / "pkg"),
            packages.install(second.state.router, tmp_path / "pkg"))
    assert sorted(len(r.written) for r in results) == [0, 2]
    assert sorted(r.unchanged for r in results) == [0, 2]
    for resource in resources:
        stored = (await client.get(f"{resource['resourceType']}/{resource['id']}")).json()
        assert stored["meta"]["versionId"] == "1"
    expanded = (await client.get("ValueSet/$expand", params={"url": resources[1]["url"]})
                ).json()
    assert sorted(c["code"] for c in expanded["expansion"]["contains"]) == ["a", "b"]


async def test_a_changed_resource_gets_a_version_and_a_copy_elsewhere_counts(
        client: httpx.AsyncClient, database_url: str, tmp_path: Path) -> None:
    tag = unique("pc")
    folder = tmp_path / "pkg"
    code_system, value_set = _small_package(folder, tag)
    # The CodeSystem was stored before under another id (e.g. `santong load`): not again.
    copied = {k: v for k, v in code_system.items() if k != "id"}
    assert (await client.post("CodeSystem", json=copied)).status_code == 201
    app = create_app(Settings(), database_url)
    async with app.router.lifespan_context(app):
        router = app.state.router
        result = await packages.install(router, folder)
        assert (result.written, result.unchanged) == ([f"ValueSet/{value_set['id']}"], 1)
        value_set["compose"]["include"][0]["concept"] = [{"code": "a"}]
        (folder / f"ValueSet-{value_set['id']}.json").write_text(json.dumps(value_set))
        result = await packages.install(router, folder)
        assert (result.written, result.unchanged) == ([f"ValueSet/{value_set['id']}"], 1)
        # A resource the server refuses keeps the whole package out, named in the error.
        (folder / "ValueSet-broken.json").write_text(json.dumps(
            {"resourceType": "ValueSet", "id": "broken", "status": 5}))
        value_set["compose"]["include"][0]["concept"] = [{"code": "b"}]
        (folder / f"ValueSet-{value_set['id']}.json").write_text(json.dumps(value_set))
        with pytest.raises(packages.PackageError, match="ValueSet/broken"):
            await packages.install(router, folder)
    stored = (await client.get(f"ValueSet/{value_set['id']}")).json()
    assert stored["meta"]["versionId"] == "2"
    assert stored["compose"]["include"][0]["concept"] == [{"code": "a"}]


def _drop(key: str) -> Any:
    return lambda resource: resource.pop(key)


def _set(path: str, value: Any) -> Any:
    def mutate(resource: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = resource
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return mutate


def _wrong_national_id(resource: dict[str, Any]) -> None:
    for identifier in resource["identifier"]:
        if identifier["system"] == NATIONAL_ID:
            value = identifier["value"]
            identifier["value"] = value[:-1] + ("0" if value[-1] != "0" else "1")


# example → (how it is broken, the issue expected: expression, a fragment of diagnostics)
INVALID: dict[str, tuple[Any, str, str]] = {
    "Patient-example-wang-guiying.json": (_wrong_national_id, "Patient", "cn-pat-1"),
    "Organization-example-county-hospital.json": (_drop("name"), "Organization.name",
                                                  "minimum cardinality 1"),
    "OrganizationAffiliation-example-member.json": (
        _drop("network"), "OrganizationAffiliation.network", "minimum cardinality 1"),
    "Practitioner-example-family-doctor.json": (_drop("name"), "Practitioner.name",
                                                "minimum cardinality 1"),
    "PractitionerRole-example-cardiologist-seconded.json": (
        _drop("period"), "PractitionerRole.period", "minimum cardinality 1"),
    "CareTeam-example-family-doctor-team.json": (
        _set("participant.0.role.0.coding.0.code", "janitor"), "CareTeam.participant[0].role[0]",
        "not in the value set"),
    "Encounter-example-followup.json": (_drop("subject"), "Encounter.subject",
                                        "minimum cardinality 1"),
    "ServiceRequest-example-referral-up.json": (
        _set("category.0.coding.0.code", "sideways"), "ServiceRequest.category[0]",
        "not in the value set"),
    "Task-example-referral-up.json": (_set("status", "completed"), "Task", "cn-task-1"),
    "CarePlan-example-hypertension-management.json": (_drop("addresses"), "CarePlan.addresses",
                                                      "minimum cardinality 1"),
    "Appointment-example-referral-visit.json": (
        lambda r: r["participant"][0].pop("actor"), "Appointment.participant[0].actor",
        "minimum cardinality 1"),
    "Consent-example-record-sharing.json": (_drop("provision"), "Consent.provision",
                                            "minimum cardinality 1"),
}


def test_every_profile_has_an_invalid_variant() -> None:
    profiled = {p.name for p in EXAMPLES if _load(p).get("meta", {}).get("profile")}
    claimed = {_load(PACKAGE / "example" / n)["meta"]["profile"][0] for n in INVALID}
    assert set(INVALID) <= profiled
    assert claimed == {_load(p)["meta"]["profile"][0] for p in EXAMPLES
                       if p.name in profiled}


@pytest.mark.parametrize("name", sorted(INVALID))
async def test_invalid_variant_of_an_example_fails(client: httpx.AsyncClient, name: str) -> None:
    example = _load(PACKAGE / "example" / name)
    mutate, expression, fragment = INVALID[name]
    mutate(example)
    response = await client.post(f"{example['resourceType']}/$validate", json=example)
    assert response.status_code == 200, response.text
    errors = [i for i in response.json()["issue"] if i["severity"] == "error"]
    assert any(i.get("expression") == [expression] and fragment in i["diagnostics"]
               for i in errors), errors
    # …and the same resource is refused when written
    written = await client.post(example["resourceType"], json=example)
    assert written.status_code in (400, 422), written.text
