"""The invariants of the base R4 definitions (pat-1, ppc-1, …): evaluated on every write and in
$validate, compiled (never fhirpathpy), in agreement with fhirpathpy on the official examples."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.helpers import create, outcome_issues, patient, r4_base
from tests.test_validation import gen_r4_definitions

from santong import definitions
from santong.generate import Dataset
from santong.search import extract
from santong.validation import ValidationIssue, invariants, validate_resource

FIXTURES = Path(__file__).parent / "fixtures" / "r4"
EXT = "http://example.org/ext"


def found(issues: list[ValidationIssue]) -> list[tuple[str, str, str, str]]:
    return [(i.severity, i.code, i.diagnostics.split(":")[0], i.expression) for i in issues]


def consent(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"text": "x"}], "patient": {"reference": "Patient/1"},
            "policyRule": {"text": "opt-in"}, **extra}


INVALID: list[tuple[str, dict[str, Any], list[tuple[str, str, str, str]]]] = [
    ("pat-1", patient(contact=[{"relationship": [{"text": "son"}]}]),
     [("error", "invariant", "pat-1", "Patient.contact[0]")]),
    ("ppc-1", {k: v for k, v in consent().items() if k != "policyRule"},
     [("error", "invariant", "ppc-1", "Consent")]),
    ("on an element", {"resourceType": "Organization", "name": "x",
                       "telecom": [{"system": "phone", "value": "1"},
                                   {"system": "phone", "value": "2", "use": "home"}]},
     [("error", "invariant", "org-3", "Organization.telecom[1]")]),
    ("in a datatype", patient(telecom=[{"value": "13800000000"}]),
     [("error", "invariant", "cpt-2", "Patient.telecom[0]")]),
    ("datatype inherited from Quantity", {
        "resourceType": "Condition", "subject": {"reference": "Patient/1"},
        "onsetAge": {"value": 3, "code": "a"}},
     [("error", "invariant", "qty-3", "Condition.onsetAge")]),
    ("ext-1 both", patient(extension=[{"url": EXT, "valueString": "x",
                                      "extension": [{"url": "a", "valueString": "y"}]}]),
     [("error", "invariant", "ext-1", "Patient.extension[0]")]),
    ("ext-1 neither", patient(name=[{"family": "x", "extension": [{"url": EXT}]}]),
     [("error", "invariant", "ext-1", "Patient.name[0].extension[0]")]),
    ("dom-2 in a contained resource", patient(contained=[
        {"resourceType": "Organization", "id": "o", "name": "x", "contained": [
            {"resourceType": "Organization", "id": "p", "name": "y"}]}]),
     [("error", "invariant", "dom-2", "Patient")]),
    ("dom-4 in a contained resource", patient(contained=[
        {"resourceType": "Organization", "id": "o", "name": "x",
         "meta": {"versionId": "1"}}]),
     [("error", "invariant", "dom-4", "Patient")]),
    ("in a contained resource", patient(contained=[
        {"resourceType": "Patient", "id": "p", "contact": [{"gender": "male"}]}]),
     [("error", "invariant", "pat-1", "Patient.contained[0].contact[0]")]),
    ("in a Bundle entry", {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient()}, {"resource": patient(contact=[{"gender": "male"}])}]},
     [("error", "invariant", "pat-1", "Bundle.entry[1].resource.contact[0]")]),
    ("of the Bundle", {"resourceType": "Bundle", "type": "collection", "total": 1},
     [("error", "invariant", "bdl-1", "Bundle")]),
]


@pytest.mark.parametrize(("resource", "expected"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invariant_errors(resource: dict[str, Any], expected: list[tuple[str, ...]]) -> None:
    assert found(validate_resource(resource)) == expected
    assert found(validate_resource(resource, invariants="none")) == []


def test_the_issue_names_the_key_the_rule_and_the_expression() -> None:
    [issue] = validate_resource(patient(contact=[{"gender": "male"}]))
    assert issue == ValidationIssue(
        "error", "invariant", "pat-1: SHALL at least contain a contact's details or a reference "
        "to an organization [name.exists() or telecom.exists() or address.exists() or "
        "organization.exists()]", "Patient.contact[0]")


def test_valid_variants_pass() -> None:
    assert validate_resource(patient(contact=[{"name": {"family": "x"}}])) == []
    assert validate_resource(consent()) == []
    assert validate_resource(consent(policy=[{"uri": "http://x"}])) == []
    # A primitive value carried only by extensions is a value (ext-1 holds).
    assert validate_resource(patient(extension=[{"url": EXT, "_valueString": {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                       "valueCode": "unknown"}]}}])) == []
    # `#id` references of a contained resource resolve in the container.
    assert validate_resource(patient(contained=[
        {"resourceType": "Organization", "id": "o", "name": "x"}],
        managingOrganization={"reference": "#o"})) == []


def test_warnings_only_when_asked() -> None:
    value_set = {"resourceType": "ValueSet", "status": "draft", "name": "lower case name"}
    assert validate_resource(value_set) == []
    assert found(validate_resource(value_set, invariants="all")) == [
        ("warning", "invariant", "vsd-0", "ValueSet")]


def test_no_invariants_over_a_broken_structure() -> None:
    resource = patient(contact=[{"gender": "male"}], birthDate="soon")
    assert [i.code for i in validate_resource(resource)] == ["value"]


def test_what_is_skipped_and_why() -> None:
    skipped = invariants.skipped()
    assert skipped["dom-6@DomainResource"] == "a best-practice recommendation"
    assert skipped["dom-3@DomainResource"] == "outside the compiled FHIRPath subset"
    assert skipped["txt-1@Narrative"] == "outside the compiled FHIRPath subset"
    assert not any(key.startswith("ele-1@") for key in skipped)  # left out of the data
    compiled = invariants.checks(invariants.WARNINGS)
    keys = {c.constraint.key for checks in compiled.values() for c in checks}
    assert {"pat-1", "ppc-1", "dom-2", "ext-1", "org-3", "qty-3", "vsd-0"} <= keys
    assert not keys & {"dom-3", "dom-6", "ele-1"}
    assert len(keys) + len({k.split("@")[0] for k in skipped}) > 200
    # Every invariant is compiled or listed as skipped.
    for name in ("Patient", "Observation", "Extension", "Period", "Bundle.entry"):
        struct = definitions.structure(name)
        for constraint in struct.constraints:
            listed = {c.constraint.key for c in compiled.get(name, ())}
            assert constraint.key in listed or any(
                k.startswith(constraint.key + "@") for k in skipped), (name, constraint.key)


def test_gates_skip_only_invariants_that_would_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invariant that holds on an empty focus is not run where the elements it reads are
    absent: over the official examples and generated data, running it anyway gives true."""
    gated = collections.Counter()
    original = invariants.run

    def run_gated_too(deferred: Any, add: Any) -> None:
        deferred = list(deferred)
        for checks, value, path, root in deferred:
            for check in checks:
                if check.test is not None and check.gate is not None and (
                        check.gate.isdisjoint(value)):
                    gated[check.constraint.key] += 1
                    assert check.test(value, root), (check.constraint.key, path)
        original(deferred, add)

    monkeypatch.setattr(invariants, "run", run_gated_too)
    _validate_samples(4)
    assert gated["dom-2"] > 400 and len(gated) > 10


def _examples(per_type: int) -> list[dict[str, Any]]:
    """Up to `per_type` official examples of each resource type (by file name)."""
    taken: collections.Counter[str] = collections.Counter()
    out = []
    for path in gen_r4_definitions.example_files(r4_base()):
        kind = path.name.split("-")[0]
        if path.name not in gen_r4_definitions.KNOWN_INVALID and taken[kind] < per_type:
            taken[kind] += 1
            out.append(orjson.loads(path.read_bytes()))
    return out


def _validate_samples(per_type: int) -> None:
    for resource in itertools.chain(_examples(per_type), Dataset(10).resources()):
        validate_resource(resource, invariants="all")


# fhirpathpy reads `answer is Boolean` strictly (System.Boolean is not FHIR boolean); the HL7
# validator and the compiled subset accept the FHIR primitive.
_LENIENT = {"que-7"}


def test_compiled_invariants_agree_with_fhirpathpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 25 values per invariant from the official examples and generated data: the
    compiled test and fhirpathpy give the same answer."""
    types = {id(c): name for name, checks in invariants.checks(invariants.WARNINGS).items()
             for c in checks}
    tried = collections.Counter()
    disagree = []
    original = invariants._one

    def both(check: invariants.Check, test: Any, value: Any, path: str, root: dict[str, Any],
             add: Any) -> None:
        key = check.constraint.key
        if check.test is test and key not in _LENIENT and tried[key] < 25 and (
                check.constraint.key != "ext-1"):
            tried[key] += 1
            expected = extract.reference_evaluate(value, check.constraint.expression, root,
                                                  value_type=types[id(check)]) == [True]
            if test(value, root) != expected:
                disagree.append((key, path))
        original(check, test, value, path, root, add)

    monkeypatch.setattr(invariants, "_one", both)
    _validate_samples(8)
    assert disagree == []
    assert len(tried) > 100


def test_generated_data_meets_every_invariant() -> None:
    for resource in Dataset(20, seed=3).resources():
        assert validate_resource(resource, invariants="all") == [], resource["id"]


# -- over HTTP --------------------------------------------------------------------------------


async def test_a_write_breaking_an_invariant_is_422(client: httpx.AsyncClient) -> None:
    bad = patient(contact=[{"gender": "male"}])
    response = await client.post("Patient", json=bad)
    assert response.status_code == 422, response.text
    [issue] = outcome_issues(response)
    assert (issue["severity"], issue["code"], issue["expression"]) == (
        "error", "invariant", ["Patient.contact[0]"])
    assert issue["diagnostics"].startswith("pat-1: ") and "telecom.exists()" in (
        issue["diagnostics"])
    stored = (await create(client, patient(contact=[{"name": {"text": "李四"}}]))).json()
    response = await client.put(f"Patient/{stored['id']}", json={**stored, **bad,
                                                                "id": stored["id"]})
    assert response.status_code == 422, response.text
    response = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                           "entry": [{"resource": bad, "request": {
                                               "method": "POST", "url": "Patient"}}]})
    assert response.status_code == 422, response.text
    assert "pat-1" in response.text
    assert (await client.get(f"Patient/{stored['id']}")).json()["meta"]["versionId"] == "1"


async def test_validate_reports_warnings_too(client: httpx.AsyncClient) -> None:
    value_set = {"resourceType": "ValueSet", "status": "draft", "name": "lower case name"}
    response = await client.post("ValueSet/$validate", json=value_set)
    assert response.status_code == 200, response.text
    [issue] = response.json()["issue"]
    assert (issue["severity"], issue["code"], issue["diagnostics"][:6]) == (
        "warning", "invariant", "vsd-0:")
    # …which a write lets through.
    assert (await client.post("ValueSet", json=value_set)).status_code == 201
    response = await client.post("Consent/$validate", json={
        k: v for k, v in consent().items() if k != "policyRule"})
    assert [(i["severity"], i["diagnostics"][:6]) for i in response.json()["issue"]] == [
        ("error", "ppc-1:")]


@pytest.mark.parametrize(("expression", "elements"), [
    ("contained.contained.empty()", {"contained"}),
    ("name.exists() or telecom.exists()", {"name", "telecom"}),
    ("Patient.name.exists()", {"name"}),
    # Inside functions that iterate, names are the items' elements, not the focus's.
    ("patient.exists() or scope.coding.where(system = 'x' and code = 'y').exists().not()",
     {"patient", "scope"}),
    ("onBehalfOf.exists() implies (member.resolve().iif(empty(), true, "
     "ofType(Practitioner).exists()))", {"onBehalfOf", "member"}),
    # Anything reading more than the focus's elements cannot be gated.
    ("exists()", None), ("%resource.name.exists()", None), ("$this.name", None),
    ("name.matches($this)", None), ("Patient.exists()", None),
])
def test_focus_elements(expression: str, elements: set[str] | None) -> None:
    found = extract.focus_elements(expression)
    assert (None if found is None else set(found)) == elements


def test_and_or_do_not_evaluate_what_cannot_change_them() -> None:
    # The right side would fail (several items as a boolean operand) if it were evaluated.
    resource = patient(name=[{"family": "a"}, {"family": "b"}])
    test = extract.compile_test("Patient", "gender.exists() or name.family")
    assert test is not None and test(resource, resource)
    test = extract.compile_test("Patient", "active.exists() and name.family")
    assert test is not None and not test(resource, resource)
    test = extract.compile_test("Patient", "gender.exists() and name.family")
    assert test is not None
    with pytest.raises(extract.ExtractionError):
        test(resource, resource)
    assert extract.compile_test("Patient", "name.descendants().exists()") is None
