"""The community generator: valid R4, internally consistent, valid Chinese identifiers,
deterministic, every workflow state present; its CLI; loading it into a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from santong.generate import Dataset, codes
from santong.generate.identifiers import (
    health_record_number,
    is_valid_national_id,
    is_valid_org_code,
    is_valid_uscc,
    national_id,
    org_code,
    uscc,
)
from santong.generate.load import load
from santong.generate.output import community_bundle, patient_bundle
from santong.validation import validate_resource
from santong.validation.profiles import validate_against
from santong.validation.registry import ProfileRegistry

PATIENTS = 60
PACKAGE = Path(__file__).resolve().parent.parent / "fhir_profiles"


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset(PATIENTS, seed=7)


@pytest.fixture(scope="module")
def resources(dataset: Dataset) -> list[dict[str, Any]]:
    return list(dataset.resources())


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def of_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


# ---- identifiers ------------------------------------------------------------------------------

def test_known_national_ids_and_uscc_validate() -> None:
    assert is_valid_national_id("11010519491231002X")  # the GB 11643 example
    assert not is_valid_national_id("110105194912310021")  # wrong check digit
    assert not is_valid_national_id("110105194902300028")  # 30 February
    assert is_valid_uscc("91350100M000100Y43")
    assert not is_valid_uscc("91350100M000100Y44")
    assert is_valid_org_code("M000100Y4")
    assert not is_valid_org_code("M000100Y5")


def test_identifier_builders_compute_the_check_characters() -> None:
    from datetime import date

    value = national_id("330122", date(1980, 2, 29), 123)
    assert value.startswith("33012219800229123") and is_valid_national_id(value)
    code = org_code("47012345")
    assert is_valid_org_code(code)
    credit = uscc("12", "330122", code)
    assert credit.startswith("12330122" + code) and is_valid_uscc(credit)
    assert health_record_number("330122", 3, 12, 45) == "33012200301200045"
    with pytest.raises(ValueError):
        national_id("33012", date(1980, 1, 1), 1)


# ---- the data -----------------------------------------------------------------------------------

def test_every_resource_is_valid_r4(resources: list[dict[str, Any]]) -> None:
    invalid = {f"{r['resourceType']}/{r['id']}": [i.diagnostics for i in validate_resource(r)]
               for r in resources if validate_resource(r)}
    assert invalid == {}
    assert len(resources) > PATIENTS * 8


def test_every_resource_meets_its_package_profile(resources: list[dict[str, Any]]) -> None:
    """Each generated resource of a profiled type validates against the three-connections
    profile for its type (fhir_profiles/), as if it claimed it."""
    registry = ProfileRegistry(None)
    registry.load_folder(PACKAGE)
    by_type = {p.type: p for p in registry.current.profiles.values() if p.type != "Extension"}
    checked = Counter()
    for resource in resources:
        profile = by_type.get(resource["resourceType"])
        if profile is None:
            continue
        issues = validate_against(resource, [profile], registry.current)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        assert errors == [], (resource["resourceType"], resource["id"], errors)
        checked[resource["resourceType"]] += 1
    assert set(checked) == set(by_type)


def test_core_invariants_the_profiles_do_not_check(resources: list[dict[str, Any]]) -> None:
    """ctm-1 (onBehalfOf only for Practitioner members) and ppc-1 (a Consent has a policy or a
    policyRule): core constraints, which profile validation leaves to the base."""
    for team in of_type(resources, "CareTeam"):
        for participant in team["participant"]:
            if "onBehalfOf" in participant:
                assert participant["member"]["reference"].startswith("Practitioner/"), team["id"]
    consents = of_type(resources, "Consent")
    assert consents
    for consent in consents:
        assert consent.get("policy") or consent.get("policyRule"), consent


def test_ids_are_unique_and_every_reference_resolves(resources: list[dict[str, Any]]) -> None:
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(keys) == len(set(keys))
    known = set(keys)
    dangling = [(k, ref) for k, r in zip(keys, resources, strict=True)
                for ref in references(r) if ref not in known]
    assert dangling == []


def test_patient_identifiers_are_valid_and_agree_with_the_patient(
        resources: list[dict[str, Any]]) -> None:
    people = of_type(resources, "Patient") + of_type(resources, "Practitioner")
    assert len(of_type(resources, "Patient")) == PATIENTS
    for person in people:
        ids = {i["system"]: i["value"] for i in person["identifier"]}
        nid = ids[codes.OID_NATIONAL_ID]
        assert is_valid_national_id(nid), nid
        assert nid[6:14] == person["birthDate"].replace("-", "")
        assert int(nid[16]) % 2 == (1 if person["gender"] == "male" else 0)
    for patient in of_type(resources, "Patient"):
        record = next(i for i in patient["identifier"] if i["system"] == codes.OID_HEALTH_RECORD)
        assert len(record["value"]) == 17 and record["value"].startswith(codes.COUNTY[0])
        assert patient["name"][0]["text"] == patient["name"][0]["family"] + \
            patient["name"][0]["given"][0]
        assert all("\u4e00" <= ch <= "\u9fff" for ch in patient["name"][0]["text"])
        assert patient["address"][0]["district"] == codes.COUNTY[1]


def test_organizations_have_valid_uscc_and_form_a_community(
        resources: list[dict[str, Any]]) -> None:
    orgs = of_type(resources, "Organization")
    legal = [o for o in orgs if "partOf" not in o]
    assert legal and all(
        is_valid_uscc(next(i["value"] for i in o["identifier"] if i["system"] == codes.SID_USCC))
        for o in legal)
    kinds = Counter(o["type"][0]["coding"][0]["code"] for o in legal if o["type"])
    assert {"A100", "B100", "C210", "C220", "D600"} <= set(kinds)
    affiliations = of_type(resources, "OrganizationAffiliation")
    members = {a["participatingOrganization"]["reference"] for a in affiliations}
    assert {f"Organization/{o['id']}" for o in legal if o["type"] and
            o["type"][0]["coding"][0]["code"] in ("B100", "C210", "C220", "D600")} <= members
    teams = of_type(resources, "CareTeam")
    assert teams and all(len(t["participant"]) >= 4 for t in teams)
    seconded = [r for r in of_type(resources, "PractitionerRole") if "availableTime" in r]
    assert seconded  # county specialists also work at township centres


def test_every_kind_and_state_appears(resources: list[dict[str, Any]]) -> None:
    classes = {e["class"]["code"] for e in of_type(resources, "Encounter")}
    assert classes == {"AMB", "EMER", "IMP", "HH", "VR"}
    kinds = {e["type"][0]["coding"][0]["code"] for e in of_type(resources, "Encounter")}
    assert kinds == set(codes.ENCOUNTER_KINDS)
    assert {t["status"] for t in of_type(resources, "Task")} == set(codes.TASK_FLOW)
    directions = {s["category"][0]["coding"][0]["code"]
                  for s in of_type(resources, "ServiceRequest")}
    assert directions == {"up", "down"}
    assert {a["status"] for a in of_type(resources, "Appointment")} == \
        set(codes.APPOINTMENT_STATUSES)
    plans = {p["category"][1]["coding"][0]["code"] for p in of_type(resources, "CarePlan")}
    assert plans == {"hypertension", "diabetes"}
    assert {c["scope"]["coding"][0]["code"] for c in of_type(resources, "Consent")} == \
        {"patient-privacy", "treatment"}


def test_tasks_and_referrals_agree(resources: list[dict[str, Any]]) -> None:
    requests = {f"ServiceRequest/{s['id']}": s for s in of_type(resources, "ServiceRequest")}
    for task in of_type(resources, "Task"):
        request = requests[task["focus"]["reference"]]
        assert request["status"] == codes.TASK_FLOW[task["status"]][0]
        assert task["for"] == request["subject"]
        if task["status"] == "completed" and "output" in task:
            assert task["output"][0]["valueReference"]["reference"].startswith("Encounter/")


def test_followups_record_observations_under_their_care_plan(
        resources: list[dict[str, Any]]) -> None:
    plans = {f"CarePlan/{p['id']}": p for p in of_type(resources, "CarePlan")}
    observations = [o for o in of_type(resources, "Observation") if "basedOn" in o]
    assert observations
    for observation in observations:
        plan = plans[observation["basedOn"][0]["reference"]]
        assert plan["subject"] == observation["subject"]
    pressures = [o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]
    assert pressures and all(60 < o["component"][0]["valueQuantity"]["value"] < 250
                             for o in pressures)


def test_output_is_deterministic_per_seed() -> None:
    first = list(Dataset(8, seed=3).resources())
    assert first == list(Dataset(8, seed=3).resources())
    assert first != list(Dataset(8, seed=4).resources())
    # a patient's record does not depend on the others generated before it
    assert Dataset(8, seed=3).record(5) == Dataset(8, seed=3).record(5)


# ---- bundles ------------------------------------------------------------------------------------

def test_transaction_bundles_are_valid_and_self_contained(dataset: Dataset) -> None:
    shared = dataset.shared()
    community = community_bundle(shared)
    assert validate_resource(community) == []
    community_keys = {f"{r['resourceType']}/{r['id']}" for r in shared}
    for index in (1, 2, 12):
        bundle = patient_bundle(dataset.record(index))
        assert validate_resource(bundle) == []
        assert bundle["type"] == "transaction"
        full_urls = [e["fullUrl"] for e in bundle["entry"]]
        assert len(set(full_urls)) == len(full_urls)
        assert all(u.startswith("urn:uuid:") for u in full_urls)
        assert all("id" not in e["resource"] for e in bundle["entry"])
        assert bundle["entry"][0]["request"]["ifNoneExist"].startswith(
            f"identifier={codes.OID_NATIONAL_ID}|")
        for ref in references(bundle):
            assert ref in full_urls or ref in community_keys, ref


# ---- the command --------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "santong", "generate", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_ndjson_per_type(tmp_path: Path) -> None:
    result = run_cli("--patients", "12", "--seed", "5", "--format", "ndjson", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["patients"] == 12 and manifest["seed"] == 5
    for rtype, count in manifest["counts"].items():
        lines = (tmp_path / f"{rtype}.ndjson").read_text().splitlines()
        assert len(lines) == count
        assert all(json.loads(line)["resourceType"] == rtype for line in lines)
    assert manifest["counts"]["Patient"] == 12
    assert sum(manifest["counts"].values()) == len(list(Dataset(12, seed=5).resources()))


def test_cli_writes_transaction_bundles(tmp_path: Path) -> None:
    result = run_cli("--patients", "3", "--format", "bundles", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == ["000000-community.json", "000001.json", "000002.json", "000003.json",
                     "manifest.json"]
    bundle = json.loads((tmp_path / "000002.json").read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["entry"][0]["resource"][
        "resourceType"] == "Patient"


def test_cli_needs_a_destination() -> None:
    result = run_cli("--patients", "1")
    assert result.returncode == 1
    assert result.stderr.strip() == "santong: generate needs --out DIR and/or --load URL"


def test_loads_into_a_running_server(live_server: str) -> None:
    dataset = Dataset(4, seed=11)
    result = load(dataset, f"{live_server}/fhir", mode="put", workers=4)
    expected = len(list(dataset.resources()))
    assert result.failures == []
    assert result.resources == result.requests == expected
    patient = dataset.record(2)[0]
    read = httpx.get(f"{live_server}/fhir/Patient/{patient['id']}")
    assert read.status_code == 200
    assert read.json()["identifier"] == patient["identifier"]
    nid = patient["identifier"][0]["value"]
    found = httpx.get(f"{live_server}/fhir/Patient",
                      params={"identifier": f"{codes.OID_NATIONAL_ID}|{nid}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [patient["id"]]
