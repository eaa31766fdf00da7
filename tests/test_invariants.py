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
    assert {"pat-1", "ppc-1", "ctm-1", "dom-2", "ext-1", "ref-1", "per-1", "org-3", "qty-3",
            "vsd-0", "bdl-7", "app-3", "rat-1", "tim-9"} <= keys
    assert not keys & {"dom-3", "dom-6", "ele-1", "txt-1"}
    assert len(skipped) < 20
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
    compiled test and fhirpathpy give the same answer (where fhirpathpy can tell)."""
    types = {id(c): name for name, checks in invariants.checks(invariants.WARNINGS).items()
             for c in checks}
    tried: collections.Counter[str] = collections.Counter()
    disagree = []
    original = invariants.run
    natives = set(invariants._NATIVE.values())

    def both(deferred: Any, add: Any) -> None:
        deferred = list(deferred)
        for checks, value, path, root in deferred:
            for check in checks:
                key = check.constraint.key
                if (check.test is None or check.test in natives or key in _LENIENT
                        or tried[key] >= 25):
                    continue
                try:  # fhirpathpy lacks hasValue(), %ucum, Quantity order, primitive roots
                    expected = extract.reference_evaluate(
                        value, check.constraint.expression, root,
                        value_type=types[id(check)]) == [True]
                except Exception:
                    continue
                tried[key] += 1
                if check.test(value, root) != expected:
                    disagree.append((key, path))
        original(deferred, add)

    monkeypatch.setattr(invariants, "run", both)
    _validate_samples(8)
    assert disagree == []
    assert len(tried) > 100


def test_generated_data_meets_every_invariant() -> None:
    for resource in Dataset(20, seed=3).resources():
        assert validate_resource(resource, invariants="all") == [], resource["id"]


# -- the FHIRPath the base invariants need -----------------------------------------------------

APPOINTMENT = {"resourceType": "Appointment", "status": "booked", "priority": 3,
               "start": "2025-04-10T09:00:00+08:00", "end": "2025-04-10T09:30:00+08:00",
               "created": "2025-04-01", "minutesDuration": 30,
               "participant": [{"actor": {"reference": "Practitioner/1"}, "status": "accepted"},
                               {"actor": {"reference": "#p"}, "status": "accepted"},
                               {"actor": {"display": "x"}, "status": "declined"}],
               "comment": "Phone Call"}


@pytest.mark.parametrize("expression", [
    "status = 'booked' xor priority > 2", "status = 'booked' xor priority > 5",
    "status = 'x' xor comment.exists()",
    "status in ('proposed' | 'booked')", "status in ('proposed' | 'waitlist')",
    "('booked' | 'x') contains status", "participant.status contains 'declined'",
    "status & '/' & comment", "comment & cancelationReason.text",
    "comment.startsWith('Phone')", "comment.startsWith('Call')", "comment.endsWith('Call')",
    "comment.contains('e C')", "comment.contains('x')", "comment.length()",
    "cancelationReason.text.startsWith('x')",
    "participant.actor.reference.select($this.startsWith('#'))",
    "participant.select(status).isDistinct()", "participant.status.distinct().count()",
    "participant.select(actor.display | actor.reference)", "participant.tail().count()",
    "participant.trace('p').count()", "participant.actor.trace('a', reference).count()",
    "participant.where(status = 'accepted').count() > 1", "priority >= 3", "priority < 3",
    "minutesDuration <= 30.5", "comment > 'Phone'", "comment < 'Phone Call!'",
    "start <= end", "start > end", "created < '2025-04-02'", "created >= '2025-04-01'",
    "participant.actor.iif(reference.exists(), reference, display)",
    "iif(priority > 2, 'high', 'low')", "iif(priority > 5, 'high')",
])
def test_subset_agrees_with_fhirpathpy(expression: str) -> None:
    assert extract.fallback_reason("Appointment", expression) is None
    compiled = [n.value for n in extract.evaluate_relative(
        "Appointment", expression, extract.Node("Appointment", APPOINTMENT), APPOINTMENT)]
    assert compiled == extract.reference_evaluate(APPOINTMENT, expression)


@pytest.mark.parametrize(("expression", "expected"), [
    # hasValue(): a single primitive with a value (one carried by extensions alone has none).
    ("birthDate.hasValue()", [True]), ("multipleBirth.hasValue()", [False]),
    ("name.hasValue()", [False]), ("_gender.hasValue()", [False]),
    ("%ucum", ["http://unitsofmeasure.org"]),
    # Dates: down to the precision both have; unknown (empty) when equal so far.
    ("birthDate < '1970-02'", [True]), ("birthDate < '1970-01'", []),
    ("birthDate = birthDate", [True]), ("birthDate <= deceased", []),
    ("deceased >= '1969-12-31'", [True]),
    # Zones are normalised when both have one; with only one, a time cannot be compared.
    ("meta.lastUpdated = meta.lastUpdated", [True]),
    ("meta.lastUpdated > contact.period.start", [True]),
    ("meta.lastUpdated < '2025-01-01T02:00:00.001Z'", [True]),
    ("meta.lastUpdated < '2025-01-01T02:00:00Z'", [False]),
    ("meta.lastUpdated < contact.period.end", []),
    ("contact.period.start < '2025-01-01T02:00'", []),
    # Quantities: same unit, or UCUM units of one kind; else unknown.
    ("contact.extension[0].value < contact.extension[1].value", [True]),
    ("contact.extension[1].value > contact.extension[2].value", [True]),
    ("contact.extension[0].value < contact.extension[3].value", []),
])
def test_subset_where_fhirpathpy_differs(expression: str, expected: list[Any]) -> None:
    quantity = "http://unitsofmeasure.org"
    resource = patient(
        birthDate="1970-01-01", gender="male", _gender={"id": "g"},
        deceasedDateTime="1970-01-01T12:00:00+08:00",
        meta={"lastUpdated": "2025-01-01T10:00:00.000+08:00"},
        contact=[{"name": {"text": "x"}, "period": {"start": "2025-01-01T01:00:00Z",
                                                     "end": "2025-01-01"},
                  "extension": [
                      {"url": "a", "valueQuantity": {"value": 500, "system": quantity,
                                                     "code": "mg"}},
                      {"url": "b", "valueQuantity": {"value": 1, "system": quantity,
                                                     "code": "g"}},
                      {"url": "c", "valueQuantity": {"value": 900, "system": quantity,
                                                     "code": "mg"}},
                      {"url": "d", "valueQuantity": {"value": 1, "system": quantity,
                                                     "code": "m"}}]}])
    assert [n.value for n in extract.evaluate_relative(
        "Patient", expression, extract.Node("Patient", resource), resource)] == expected


def careteam(member: str, **participant: Any) -> dict[str, Any]:
    return {"resourceType": "CareTeam", "participant": [
        {"member": {"reference": member}, **participant}]}


R4_REWRITTEN: list[tuple[str, dict[str, Any], list[tuple[str, str, str, str]]]] = [
    # ctm-1 (iif): onBehalfOf only beside a Practitioner member (or one that cannot be told).
    ("ctm-1", careteam("PractitionerRole/1", onBehalfOf={"reference": "Organization/1"}),
     [("error", "invariant", "ctm-1", "CareTeam.participant[0]")]),
    ("ctm-1 practitioner", careteam("Practitioner/1",
                                     onBehalfOf={"reference": "Organization/1"}), []),
    ("ctm-1 unresolved", {"resourceType": "CareTeam", "participant": [
        {"member": {"display": "x"}, "onBehalfOf": {"reference": "Organization/1"}}]}, []),
    # per-1, R5's: by the boundaries of each value.
    ("per-1", patient(name=[{"text": "x", "period": {"start": "2021", "end": "2020-12"}}]),
     [("error", "invariant", "per-1", "Patient.name[0].period")]),
    ("per-1 precisions", patient(name=[{"text": "x", "period": {
        "start": "2020", "end": "2020-05-01T10:00:00+08:00"}}]), []),
    ("per-1 zones", patient(name=[{"text": "x", "period": {
        "start": "2020-05-01T10:00:00+08:00", "end": "2020-05-01T01:00:00Z"}}]),
     [("error", "invariant", "per-1", "Patient.name[0].period")]),
    ("per-1 zones ok", patient(name=[{"text": "x", "period": {
        "start": "2020-05-01T10:00:00+08:00", "end": "2020-05-01T03:00:00Z"}}]), []),
    # A date may be in any zone: against a time it only fails when no zone would do.
    ("per-1 date", patient(name=[{"text": "x", "period": {
        "start": "2020-05-02T01:00:00+08:00", "end": "2020-05-01"}}]), []),
    ("per-1 date late", patient(name=[{"text": "x", "period": {
        "start": "2020-05-03T01:00:00+08:00", "end": "2020-05-01"}}]),
     [("error", "invariant", "per-1", "Patient.name[0].period")]),
    # ref-1, R5's: a local reference names a contained resource; `#` is the container.
    ("ref-1", patient(managingOrganization={"reference": "#o"}),
     [("error", "invariant", "ref-1", "Patient.managingOrganization")]),
    ("ref-1 identifier only", patient(managingOrganization={"identifier": {"value": "1"}}), []),
    ("ref-1 container", patient(contained=[{"resourceType": "Provenance", "id": "p",
                                            "recorded": "2020-01-01T00:00:00Z",
                                            "target": [{"reference": "#"}],
                                            "agent": [{"who": {"reference": "#o"}}]},
                                           {"resourceType": "Organization", "id": "o",
                                            "name": "x"}]), []),
    # bdl-8, R5's: a fullUrl, when there is one, is not version specific.
    ("bdl-8", {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://x/Patient/1/_history/2", "resource": patient()}]},
     [("error", "invariant", "bdl-8", "Bundle.entry[0]")]),
    ("bdl-8 without fullUrl", {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient()}]}, []),
    ("ras-2", {"resourceType": "RiskAssessment", "status": "final",
               "subject": {"reference": "Patient/1"},
               "prediction": [{"probabilityDecimal": 120}, {"outcome": {"text": "x"}}]},
     [("error", "invariant", "ras-2", "RiskAssessment.prediction[0]")]),
    # inv-1 of Task: comparing two dateTimes.
    ("task inv-1", {"resourceType": "Task", "status": "requested", "intent": "order",
                    "authoredOn": "2025-04-10T09:00:00+08:00",
                    "lastModified": "2025-04-10T08:00:00+08:00"},
     [("error", "invariant", "inv-1", "Task")]),
]


@pytest.mark.parametrize(("resource", "expected"), [c[1:] for c in R4_REWRITTEN],
                         ids=[c[0] for c in R4_REWRITTEN])
def test_invariants_that_needed_more_than_r4_text(resource: dict[str, Any],
                                                  expected: list[tuple[str, ...]]) -> None:
    assert found(validate_resource(resource)) == expected


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
