"""The three-connections FHIR package in fhir_profiles/: structure, snapshots, terminology,
search parameters, invariants and agreement with the data generator. No database needed."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import random
import shutil
import sys
from datetime import date
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from tests.helpers import r4_base

from santong.generate import Dataset, codes
from santong.generate.identifiers import (
    USCC_CHARS,
    is_valid_org_code,
    national_id,
    national_id_check,
    org_code,
    uscc,
    uscc_check,
)
from santong.search import parameters
from santong.validation import validate_resource

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fhir_profiles"
EXAMPLES = PACKAGE / "example"
CORE = "http://hl7.org/fhir/"
THO = "http://terminology.hl7.org/"

_spec = importlib.util.spec_from_file_location("gen_snapshots", ROOT / "tools" / "gen_snapshots.py")
assert _spec is not None and _spec.loader is not None
gen_snapshots = importlib.util.module_from_spec(_spec)
sys.modules["gen_snapshots"] = gen_snapshots
_spec.loader.exec_module(gen_snapshots)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


RESOURCE_FILES = sorted(p for p in PACKAGE.glob("*.json") if p.name != "package.json")
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
RESOURCES = {p.name: _load(p) for p in RESOURCE_FILES}
BY_URL = {r["url"]: r for r in RESOURCES.values() if "url" in r}
PROFILES = {r["url"]: r for r in RESOURCES.values()
            if r["resourceType"] == "StructureDefinition" and r["type"] != "Extension"}
PROFILE_FOR_TYPE = {r["type"]: url for url, r in PROFILES.items()}
CODE_SYSTEMS = {r["url"]: r for r in RESOURCES.values() if r["resourceType"] == "CodeSystem"}
def _profile(rtype: str) -> dict[str, Any]:
    return PROFILES[PROFILE_FOR_TYPE[rtype]]


def _invariant(rtype: str, key: str) -> str:
    for element in _profile(rtype)["differential"]["element"]:
        for constraint in element.get("constraint", ()):
            if constraint["key"] == key:
                return constraint["expression"]
    raise KeyError(key)


def _own_root_constraints(sd: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in sd["snapshot"]["element"][0].get("constraint", ())
            if c.get("source") == sd["url"]]


@functools.cache
def _compiled(expression: str) -> Any:
    return fhirpathpy.compile(expression)


def _holds(resource: dict[str, Any], expression: str) -> bool:
    result = _compiled(expression)(resource)
    assert result in ([True], [False]), f"{expression[:80]}… gave {result!r}"
    return result == [True]


# ---- the package -----------------------------------------------------------------------------


def test_package_manifest() -> None:
    manifest = _load(PACKAGE / "package.json")
    assert manifest["name"] == "santong.fhir.three-connections"
    assert manifest["version"] == "0.1.0"
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["canonical"] == codes.LOCAL
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    ig = RESOURCES["ImplementationGuide-santong-three-connections.json"]
    assert ig["packageId"] == manifest["name"] and ig["version"] == manifest["version"]
    assert ig["fhirVersion"] == manifest["fhirVersions"]


@pytest.mark.parametrize("path", RESOURCE_FILES + EXAMPLE_FILES, ids=lambda p: p.name)
def test_file_is_a_structurally_valid_resource_named_by_type_and_id(path: Path) -> None:
    resource = _load(path)
    assert path.name == f"{resource['resourceType']}-{resource['id']}.json"
    errors = [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]
    assert errors == []


def test_canonical_urls_follow_the_base_and_the_generator() -> None:
    for name, resource in RESOURCES.items():
        rtype, url = resource["resourceType"], resource.get("url")
        if rtype == "NamingSystem":
            assert url is None
            continue
        if url.startswith("urn:oid:"):  # national code systems: the OID URN is the canonical
            assert rtype in ("CodeSystem",), name
            assert {"system": "urn:ietf:rfc:3986", "value": url} in resource["identifier"]
        else:
            assert url == f"{codes.LOCAL}/{rtype}/{resource['id']}", name
        if "version" in resource:
            assert resource["version"] == "0.1.0", name
    # every local system the generator writes is defined here, under the same URL
    for attr in dir(codes):
        value = getattr(codes, attr)
        if attr.startswith(("CS_", "EXT_")):
            assert value in BY_URL, f"codes.{attr} = {value} has no resource in the package"
        if attr.startswith("OID_") and attr not in ("OID_ICD10", "OID_DATA_ELEMENT") and (
                ".2.3." in value):
            assert value in CODE_SYSTEMS, f"codes.{attr} = {value} has no CodeSystem"


def _canonicals(value: Any, key: str = "") -> list[str]:
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(_canonicals(v, k))
    elif isinstance(value, list):
        for v in value:
            found.extend(_canonicals(v, key))
    elif isinstance(value, str) and key in (
            "valueSet", "profile", "targetProfile", "baseDefinition", "sourceCanonical",
            "targetCanonical", "exampleCanonical"):
        found.append(value)
    return found


def test_every_canonical_reference_resolves() -> None:
    for name, resource in RESOURCES.items():
        for url in _canonicals(resource):
            if url.startswith((CORE, THO)):
                continue
            assert url in BY_URL, f"{name}: {url} is not in the package"
    ig = RESOURCES["ImplementationGuide-santong-three-connections.json"]
    listed = {e["reference"]["reference"] for e in ig["definition"]["resource"]}
    present = {f"{r['resourceType']}/{r['id']}" for r in RESOURCES.values()
               if r["resourceType"] != "ImplementationGuide"}
    present |= {f"{_load(p)['resourceType']}/{_load(p)['id']}" for p in EXAMPLE_FILES}
    assert listed == present


# ---- snapshots -------------------------------------------------------------------------------


def test_committed_snapshots_are_current() -> None:
    assert gen_snapshots.run(PACKAGE, r4_base(), check=True) == []


def test_snapshot_check_notices_a_changed_differential(tmp_path: Path) -> None:
    copy_dir = tmp_path / "pkg"
    shutil.copytree(PACKAGE, copy_dir)
    path = copy_dir / "StructureDefinition-santong-patient.json"
    sd = _load(path)
    gender = next(e for e in sd["differential"]["element"] if e["id"] == "Patient.gender")
    gender["min"] = 0
    path.write_text(json.dumps(sd, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert gen_snapshots.run(copy_dir, r4_base(), check=True) == [path.name]
    assert gen_snapshots.run(copy_dir, r4_base(), check=False) == [path.name]
    fresh = _load(path)
    element = next(e for e in fresh["snapshot"]["element"] if e["id"] == "Patient.gender")
    assert element["min"] == 0
    assert gen_snapshots.run(copy_dir, r4_base(), check=True) == []


def test_snapshot_generator_refuses_what_it_does_not_support() -> None:
    defs = gen_snapshots.Definitions(r4_base(), PACKAGE)
    sd = copy.deepcopy(PROFILES[codes.SD + "santong-patient"])
    sd["differential"]["element"].append({"id": "Patient.name:official", "path": "Patient.name"})
    with pytest.raises(gen_snapshots.SnapshotError, match="not sliced"):
        gen_snapshots.generate(sd, defs)
    sd = copy.deepcopy(PROFILES[codes.SD + "santong-patient"])
    sd["differential"]["element"].append({"id": "Patient.nickname", "path": "Patient.nickname"})
    with pytest.raises(gen_snapshots.SnapshotError, match="no such element"):
        gen_snapshots.generate(sd, defs)


@pytest.mark.parametrize("url", sorted(u for u, r in BY_URL.items()
                                       if r["resourceType"] == "StructureDefinition"))
def test_snapshot_carries_every_differential_constraint(url: str) -> None:
    sd = BY_URL[url]
    snapshot = {e["id"]: e for e in sd["snapshot"]["element"]}
    assert sd["snapshot"]["element"][0]["id"] == sd["type"]
    for diff in sd["differential"]["element"]:
        element = snapshot[diff["id"]]
        assert element["path"] == diff["path"]
        for key, value in diff.items():
            if key == "constraint":
                for constraint in value:
                    assert constraint in element["constraint"]
                    assert constraint["source"] == url
            else:
                assert element[key] == value, f"{diff['id']}.{key}"
    ids = [e["id"] for e in sd["snapshot"]["element"]]
    assert len(ids) == len(set(ids))


def test_slices_have_discriminating_values() -> None:
    for url, sd in PROFILES.items():
        snapshot = {e["id"]: e for e in sd["snapshot"]["element"]}
        for element in sd["snapshot"]["element"]:
            slicing = element.get("slicing")
            if not slicing or element["path"].endswith("xtension"):
                continue
            slices = [e for e in snapshot.values() if e["id"].startswith(element["id"] + ":")
                      and "." not in e["id"][len(element["id"]):]]
            assert slices, f"{url}: {element['id']} is sliced but has no slice"
            for discriminator in slicing["discriminator"]:
                for slice_ in slices:
                    if discriminator["path"] == "$this":
                        target = slice_
                    else:
                        target = snapshot[f"{slice_['id']}.{discriminator['path']}"]
                    assert any(k.startswith(("fixed", "pattern")) for k in target), (
                        f"{url}: {slice_['id']} has no value for {discriminator['path']}")


# ---- invariants ------------------------------------------------------------------------------


def _patient_with(nid: str) -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"system": codes.OID_NATIONAL_ID, "value": nid}]}


def test_national_id_invariant() -> None:
    expression = _invariant("Patient", "cn-pat-1")
    assert _invariant("Practitioner", "cn-prac-1") == expression
    good = [national_id("330122", date(1958, 3, 21), 284), "11010519491231002X",
            national_id("110105", date(2001, 12, 31), 999)]
    for value in good:
        assert _holds(_patient_with(value), expression), value
    bad = [good[0][:-1] + ("0" if good[0][-1] != "0" else "1"),  # wrong check character
           "11010519491231002x", "110105194912310021", good[0][:17],  # lower-case, wrong, short
           "010105194912310023", "110105194913310028", "ABCDEFGHIJKLMNOPQR", ""]
    for value in bad:
        assert not _holds(_patient_with(value), expression), value
    assert _holds({"resourceType": "Patient"}, expression)  # no national ID: nothing to check
    other = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]}
    assert _holds(other, expression)


def test_national_id_invariant_agrees_with_the_check_character() -> None:
    rng = random.Random(5)
    expression = _invariant("Patient", "cn-pat-1")
    for _ in range(150):
        body = national_id("330122", date(rng.randint(1920, 2024), rng.randint(1, 12),
                                          rng.randint(1, 28)), rng.randrange(1000))[:17]
        last = rng.choice("0123456789X")
        assert _holds(_patient_with(body + last), expression) == (
            national_id_check(body) == last)


def _org_with(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "identifier": [{"system": system, "value": value}]}


def test_uscc_invariant() -> None:
    expression = _invariant("Organization", "cn-org-1")
    good = ["91350100M000100Y43", uscc("12", "330122", org_code("M1234567")),
            uscc("52", "330122", org_code("40000001"))]
    for value in good:
        assert _holds(_org_with(codes.SID_USCC, value), expression), value
    bad = ["91350100M000100Y44", good[1].lower(), good[1][:17], "I1350100M000100Y43",
           "91350100M000100Y4O", "0" * 18]
    for value in bad:
        assert not _holds(_org_with(codes.SID_USCC, value), expression), value
    rng = random.Random(7)
    for _ in range(150):
        body = rng.choice("159") + rng.choice("123") + "330122" + "".join(
            rng.choice(USCC_CHARS) for _ in range(9))
        last = rng.choice(USCC_CHARS)
        assert _holds(_org_with(codes.SID_USCC, body + last), expression) == (
            uscc_check(body) == last)


def test_organization_code_invariant() -> None:
    expression = _invariant("Organization", "cn-org-2")
    rng = random.Random(11)
    for _ in range(150):
        body = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
        last = rng.choice("0123456789X")
        assert _holds(_org_with(codes.OID_ORG, body + last), expression) == (
            is_valid_org_code(body + last))
    assert not _holds(_org_with(codes.OID_ORG, "M123456"), expression)


def test_task_status_invariant_follows_the_business_status() -> None:
    expression = _invariant("Task", "cn-task-1")
    business = CODE_SYSTEMS[codes.CS_REFERRAL_STATUS]
    statuses = {c["code"]: c["property"][0]["valueCode"] for c in business["concept"]}
    for code, status in statuses.items():
        task = {"resourceType": "Task", "status": status, "businessStatus": {
            "coding": [{"system": codes.CS_REFERRAL_STATUS, "code": code}]}}
        assert _holds(task, expression), code
        task["status"] = "draft" if status != "draft" else "requested"
        assert not _holds(task, expression), code
    # the generator's Task.status → business status mapping is the CodeSystem's
    for status, (_sr, code, _name) in codes.TASK_FLOW.items():
        assert statuses[code] == status


def test_other_invariants() -> None:
    sex = _invariant("Patient", "cn-pat-2")
    patient = {"resourceType": "Patient", "gender": "female", "extension": [
        {"url": codes.EXT_GENDER_GB, "valueCoding": {"system": codes.OID_GENDER_GB, "code": "2"}}]}
    assert _holds(patient, sex)
    patient["gender"] = "male"
    assert not _holds(patient, sex)
    assert _holds({"resourceType": "Patient", "gender": "male"}, sex)
    ws218 = _invariant("Organization", "cn-org-3")
    assert not _holds({"resourceType": "Organization", "name": "x"}, ws218)
    assert _holds({"resourceType": "Organization", "partOf": {"reference": "Organization/1"}},
                  ws218)
    declined = _invariant("Task", "cn-task-2")
    assert not _holds({"resourceType": "Task", "status": "rejected"}, declined)
    assert _holds({"resourceType": "Task", "status": "rejected",
                   "statusReason": {"text": "床位不足"}}, declined)


# ---- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_claims_a_package_profile_and_meets_its_invariants(path: Path) -> None:
    example = _load(path)
    claimed = example.get("meta", {}).get("profile", [])
    if example["resourceType"] not in PROFILE_FOR_TYPE:
        assert claimed == []
        return
    assert claimed == [PROFILE_FOR_TYPE[example["resourceType"]]]
    constraints = _own_root_constraints(PROFILES[claimed[0]])
    for constraint in constraints:
        assert _holds(example, constraint["expression"]), constraint["key"]


def test_every_profile_has_an_example() -> None:
    claimed = {u for p in EXAMPLE_FILES for u in _load(p).get("meta", {}).get("profile", [])}
    assert claimed == set(PROFILES)


# ---- terminology -----------------------------------------------------------------------------


def _external_code_system(url: str) -> dict[str, Any] | None:
    for candidate in r4_base().glob("CodeSystem-*.json"):
        if candidate.name == f"CodeSystem-{url.rsplit('/', 1)[-1]}.json":
            found = _load(candidate)
            if found.get("url") == url:
                return found
    return None


def _codes_of(code_system: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    stack = list(code_system.get("concept", ()))
    while stack:
        concept = stack.pop()
        out.add(concept["code"])
        stack.extend(concept.get("concept", ()))
    return out


def test_code_systems_are_well_formed() -> None:
    for url, cs in CODE_SYSTEMS.items():
        found = _codes_of(cs)
        assert len(found) == len(cs["concept"]) == cs["count"], url
        assert cs["content"] in ("complete", "fragment")
        assert cs["valueSet"] in BY_URL
        if url.startswith("urn:oid:"):
            assert cs["content"] == "fragment"  # copied from secondary sources only
        for concept in cs["concept"]:
            for prop in concept.get("property", ()):
                assert prop["code"] in {p["code"] for p in cs["property"]}


def test_every_value_set_code_exists_in_its_code_system() -> None:
    checked = 0
    for resource in RESOURCES.values():
        if resource["resourceType"] != "ValueSet":
            continue
        for include in resource["compose"]["include"]:
            system = include["system"]
            cs = CODE_SYSTEMS.get(system) or _external_code_system(system)
            if system.startswith((CORE, THO)) and cs is None:
                continue  # a core system, and the R4 package is not unpacked here
            assert cs is not None, f"{resource['url']}: unknown system {system}"
            known = _codes_of(cs)
            for concept in include.get("concept", ()):
                assert concept["code"] in known, f"{resource['url']}: {concept['code']}"
                checked += 1
    assert checked >= 4


def test_concept_maps_map_codes_that_exist() -> None:
    for resource in RESOURCES.values():
        if resource["resourceType"] != "ConceptMap":
            continue
        for group in resource["group"]:
            source = CODE_SYSTEMS.get(group["source"])
            assert source is not None
            target = CODE_SYSTEMS.get(group["target"]) or _external_code_system(group["target"])
            assert {e["code"] for e in group["element"]} == _codes_of(source)
            for element in group["element"]:
                for mapped in element["target"]:
                    if "code" in mapped and target is not None:
                        assert mapped["code"] in _codes_of(target), mapped


def test_naming_systems_cover_the_profiled_identifier_systems() -> None:
    named = {u["value"] for r in RESOURCES.values() if r["resourceType"] == "NamingSystem"
             for u in r["uniqueId"] if u["type"] == "uri"}
    fixed = {e["fixedUri"] for sd in PROFILES.values() for e in sd["differential"]["element"]
             if e["path"].endswith("identifier.system") and "fixedUri" in e}
    assert fixed and fixed <= named
    for attr in ("OID_NATIONAL_ID", "OID_HEALTH_RECORD", "OID_HEALTH_CARD", "SID_USCC",
                 "SID_REFERRAL_NO", "OID_STAFF", "OID_ORG"):
        assert getattr(codes, attr) in named


# ---- search parameters -----------------------------------------------------------------------


SEARCH_PARAMETERS = sorted(n for n in RESOURCES if n.startswith("SearchParameter-"))
EXPECTED_HITS = {  # search parameter code → (example file, a value it must index)
    "referral-direction": ("ServiceRequest-example-referral-up.json", "up"),
    "receiving-organization": ("ServiceRequest-example-referral-up.json", None),
    "referral-business-status": ("Task-example-referral-up.json", "arrived"),
    "national-id": ("Patient-example-wang-guiying.json", None),
    "name-pinyin": ("Patient-example-wang-guiying.json", None),
}


@pytest.mark.parametrize("name", SEARCH_PARAMETERS)
def test_search_parameter_registers(name: str) -> None:
    resource = RESOURCES[name]
    # A server in this process may have registered it already (the package is stored at
    # start-up): put that registration back afterwards.
    previous = parameters.by_url(resource["url"])
    try:
        registered = parameters.register(resource)
        assert registered.url == resource["url"]
        for base in resource["base"]:
            assert parameters.get(base, resource["code"]) is not None
    finally:
        parameters.unregister(resource["url"])
    for base in resource["base"]:
        assert parameters.get(base, resource["code"]) is None
    if previous is not None:
        parameters.register(resource)


@pytest.mark.parametrize("name", SEARCH_PARAMETERS)
def test_search_parameter_expression_finds_the_example_value(name: str) -> None:
    resource = RESOURCES[name]
    example_file, value = EXPECTED_HITS[resource["code"]]
    example = _load(EXAMPLES / example_file)
    expression = resource["expression"]
    if "resolve()" in expression:  # resolve() needs the target: check the element it filters
        found = fhirpathpy.evaluate(example, expression.split(".where(resolve()")[0])
        assert any(r["reference"].startswith("Organization/") for r in found)
        return
    found = fhirpathpy.evaluate(example, expression)
    assert found, f"{resource['code']} indexes nothing in {example_file}"
    if value is not None:
        assert value in {f.get("code") for f in found}


def test_broken_search_parameter_is_refused() -> None:
    broken = copy.deepcopy(RESOURCES[SEARCH_PARAMETERS[0]])
    broken["expression"] = "ServiceRequest.category.where("
    with pytest.raises(parameters.InvalidSearchParameter):
        parameters.register(broken)


# ---- the generator's output ------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> list[dict[str, Any]]:
    return list(Dataset(48).resources())


def _codings(value: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(value, dict):
        if "system" in value and "code" in value and isinstance(value["code"], str):
            found.append(value)
        for v in value.values():
            found.extend(_codings(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(_codings(v))
    return found


def test_generated_codes_exist_in_the_package_code_systems(
        generated: list[dict[str, Any]]) -> None:
    seen: dict[str, set[str]] = {}
    for resource in generated:
        for coding in _codings(resource):
            if coding["system"] in CODE_SYSTEMS:
                seen.setdefault(coding["system"], set()).add(coding["code"])
    assert codes.CS_REFERRAL_STATUS in seen and codes.OID_GENDER_GB in seen
    for system, found in seen.items():
        missing = found - _codes_of(CODE_SYSTEMS[system])
        assert not missing, f"{system}: {sorted(missing)}"


def test_generated_resources_meet_the_profile_invariants(
        generated: list[dict[str, Any]]) -> None:
    checked = 0
    for resource in generated:
        url = PROFILE_FOR_TYPE.get(resource["resourceType"])
        if url is None:
            continue
        for constraint in _own_root_constraints(PROFILES[url]):
            assert _holds(resource, constraint["expression"]), (
                f"{resource['resourceType']}/{resource['id']}: {constraint['key']}")
            checked += 1
    assert checked > 100
