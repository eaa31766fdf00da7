"""Unit tests of the R4 definitions and the structural validator (no database needed).

Fixtures in tests/fixtures/r4 are official HL7 FHIR R4 4.0.1 examples (CC0).
"""

from __future__ import annotations

import copy
import importlib.util
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.helpers import r4_base

from santong import definitions
from santong.fhir import jsonio
from santong.validation import MAX_ISSUES, ValidationIssue, validate_resource

ROOT = Path(__file__).resolve().parent.parent
R4_FIXTURES = Path(__file__).parent / "fixtures" / "r4"
EXAMPLES = sorted(R4_FIXTURES.glob("*.json"))
EXT = "http://example.org/ext"


def load(name: str) -> dict[str, Any]:
    return orjson.loads((R4_FIXTURES / name).read_bytes())


def found(issues: list[ValidationIssue]) -> list[tuple[str, str]]:
    return [(i.code, i.expression) for i in issues]


# -- definitions ------------------------------------------------------------------------------


def test_resource_types() -> None:
    types = definitions.resource_types()
    assert definitions.RESOURCE_TYPES is types
    assert 140 <= len(types) <= 150
    assert {"Patient", "Observation", "Bundle", "Parameters", "Binary"} <= types
    for not_concrete in ("Resource", "DomainResource", "HumanName", "string", "patient"):
        assert not definitions.is_resource_type(not_concrete)
    assert definitions.is_resource_type("ServiceRequest")
    assert definitions.fhir_version() == "4.0.1"


def test_summary_and_mandatory_elements() -> None:
    summary = definitions.summary_elements("Patient")
    assert {"id", "meta", "name", "birthDate", "_birthDate", "deceasedBoolean"} <= summary
    assert {"deceasedDateTime", "identifier", "active", "implicitRules"} <= summary
    assert not {"contact", "photo", "text", "contained", "resourceType"} & summary
    assert definitions.mandatory_elements("Observation") == {"status", "code"}
    assert definitions.mandatory_elements("Patient") == frozenset()
    assert definitions.mandatory_elements("MedicationRequest") == {
        "status", "intent", "subject", "medicationCodeableConcept", "medicationReference"}
    # Mandatory elements always belong to the summary.
    assert {"status", "code"} <= definitions.summary_elements("Observation")
    assert "birthDate" in definitions.element_names("Patient")
    with pytest.raises(KeyError):
        definitions.summary_elements("Nope")


def test_structures() -> None:
    patient = definitions.structure("Patient")
    deceased = patient.elements["deceasedDateTime"]
    assert (deceased.type, deceased.choice, deceased.kind) == ("dateTime", "deceased",
                                                               definitions.PRIMITIVE)
    assert deceased.summary and deceased.modifier and not deceased.array
    assert patient.choices["deceased"] == ("deceasedBoolean", "deceasedDateTime")
    assert patient.elements["name"].array
    assert patient.elements["contact"].structure is definitions.structure("Patient.contact")
    assert patient.elements["contained"].kind == definitions.RESOURCE
    # contentReference: Questionnaire.item.item reuses Questionnaire.item.
    item = definitions.structure("Questionnaire.item")
    assert item.elements["item"].structure is item
    request = definitions.structure("Bundle.entry.request")
    assert request.elements["method"].min == 1
    assert definitions.get_structure("Bundle.nope") is None
    date = definitions.primitive("date")
    assert date is not None and date.json == "string" and date.regex
    assert definitions.primitive("positiveInt").json == "number"  # type: ignore[union-attr]
    assert definitions.primitive("boolean").json == "boolean"  # type: ignore[union-attr]


# -- valid resources --------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_official_examples_are_valid(path: Path) -> None:
    resource = orjson.loads(path.read_bytes())
    assert validate_resource(resource) == []
    assert validate_resource(resource, resource["resourceType"]) == []


def test_required_fixtures_present() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"Patient-example.json", "Encounter-example.json", "ServiceRequest-example.json",
            "CarePlan-example.json"} <= names


@pytest.mark.parametrize(
    "resource",
    [
        # A primitive array with extensions: nulls keep both arrays aligned.
        {"resourceType": "Patient", "name": [{"given": ["Jim", None, "Pat"],
                                              "_given": [None, {"extension": [
                                                  {"url": EXT, "valueString": "x"}]}, None]}]},
        # An extension-only primitive (no value) and an extension-only required element.
        {"resourceType": "Patient", "_birthDate": {"extension": [
            {"url": EXT, "valueCode": "unknown"}]}},
        {"resourceType": "Observation", "code": {"text": "x"},
         "_status": {"extension": [{"url": EXT, "valueCode": "unknown"}]}},
        # Decimals as int, float or a float subclass.
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "valueQuantity": {"value": 37}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "valueQuantity": {"value": type("Dec", (float,), {})(36.6)}},
        # Both spellings of the same choice variant are one variant.
        {"resourceType": "Patient", "deceasedBoolean": True,
         "_deceasedBoolean": {"id": "d"}},
        # Non-ASCII text, including the ideographic space U+3000.
        {"resourceType": "Patient", "name": [{"text": "张\u3000三"}]},
        {"resourceType": "Patient", "text": {"status": "generated",
                                              "div": "\n  <div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}},
        {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVs\nbG8=\n"},
        {"resourceType": "Patient", "meta": {"lastUpdated": "2024-02-29T10:00:00.123+08:00"},
         "birthDate": "2024-02-29"},
        {"resourceType": "Parameters", "parameter": [
            {"name": "p", "resource": {"resourceType": "Patient", "active": True}},
            {"name": "q", "valueTime": "23:59:60"}]},
    ],
    ids=["aligned-nulls", "extension-only", "extension-only-required", "decimal-int",
         "decimal-float-subclass", "choice-with-sibling", "unicode",
         "xhtml-leading-space", "base64-lines", "leap-day", "parameters-resource"],
)
def test_valid_edge_cases(resource: dict[str, Any]) -> None:
    assert validate_resource(resource) == []


# -- errors -----------------------------------------------------------------------------------

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


def obs(**extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(OBS), **extra}


def pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


ERROR_CASES: list[tuple[str, Any, str, str]] = [
    # (case id, resource, issue code, expression)
    ("unknown-element", pat(foo=1), "structure", "Patient.foo"),
    ("unknown-nested", pat(name=[{"family": "x", "nickname": "y"}]), "structure",
     "Patient.name[0].nickname"),
    ("misspelled-choice", pat(deceasedBool=True), "structure", "Patient.deceasedBool"),
    ("choice-base-name", pat(deceased=True), "structure", "Patient.deceased"),
    ("resourceType-in-datatype", pat(name=[{"resourceType": "HumanName"}]), "structure",
     "Patient.name[0].resourceType"),
    ("sibling-of-complex", pat(_name={"id": "x"}), "structure", "Patient._name"),
    ("string-for-boolean", pat(active="true"), "structure", "Patient.active"),
    ("number-for-string", pat(name=[{"family": 3}]), "structure", "Patient.name[0].family"),
    ("boolean-for-string", pat(gender=True), "structure", "Patient.gender"),
    ("object-for-array-item", pat(name=[{"given": [{"value": "x"}]}]), "structure",
     "Patient.name[0].given[0]"),
    ("string-for-object", pat(maritalStatus="married"), "structure", "Patient.maritalStatus"),
    ("string-in-object-array", pat(name=["Jim"]), "structure", "Patient.name[0]"),
    ("single-for-array", pat(name={"family": "x"}), "structure", "Patient.name"),
    ("array-for-single", pat(gender=["male"]), "structure", "Patient.gender"),
    ("array-for-single-complex", pat(maritalStatus=[{"text": "x"}]), "structure",
     "Patient.maritalStatus"),
    ("nested-array", pat(name=[[{"family": "x"}]]), "structure", "Patient.name[0]"),
    ("bad-date-month", pat(birthDate="2020-13-01"), "value", "Patient.birthDate"),
    ("bad-date-calendar", pat(birthDate="2023-02-29"), "value", "Patient.birthDate"),
    ("bad-date-format", pat(birthDate="25/12/1974"), "value", "Patient.birthDate"),
    ("bad-dateTime-no-zone", pat(deceasedDateTime="2020-01-01T10:00:00"), "value",
     "Patient.deceasedDateTime"),
    ("bad-dateTime-no-seconds", pat(deceasedDateTime="2020-01-01T10:00Z"), "value",
     "Patient.deceasedDateTime"),
    ("bad-instant-date-only", pat(meta={"lastUpdated": "2020-01-01"}), "value",
     "Patient.meta.lastUpdated"),
    ("bad-time", obs(valueTime="25:00:00"), "value", "Observation.valueTime"),
    ("bad-id-char", pat(id="a_b"), "value", "Patient.id"),
    ("bad-id-length", pat(id="x" * 65), "value", "Patient.id"),
    ("bad-code-double-space", pat(gender="ma  le"), "value", "Patient.gender"),
    ("bad-code-leading-space", pat(gender=" male"), "value", "Patient.gender"),
    ("bad-uri", pat(implicitRules="http://x y"), "value", "Patient.implicitRules"),
    ("bad-oid", pat(identifier=[{"system": "urn:ietf:rfc:3986", "value": "x"}],
                    extension=[{"url": EXT, "valueOid": "urn:oid:3.1"}]), "value",
     "Patient.extension[0].valueOid"),
    ("bad-uuid", pat(extension=[{"url": EXT, "valueUuid": "urn:uuid:ABC"}]), "value",
     "Patient.extension[0].valueUuid"),
    ("bad-base64", {"resourceType": "Binary", "contentType": "text/plain", "data": "abc"},
     "value", "Binary.data"),
    ("bad-xhtml", pat(text={"status": "generated", "div": "<p>x</p>"}), "value",
     "Patient.text.div"),
    ("positiveInt-zero", pat(extension=[{"url": EXT, "valuePositiveInt": 0}]), "value",
     "Patient.extension[0].valuePositiveInt"),
    ("unsignedInt-negative", pat(extension=[{"url": EXT, "valueUnsignedInt": -1}]), "value",
     "Patient.extension[0].valueUnsignedInt"),
    ("integer-overflow", pat(multipleBirthInteger=2**31), "value",
     "Patient.multipleBirthInteger"),
    ("boolean-for-integer", pat(multipleBirthInteger=True), "structure",
     "Patient.multipleBirthInteger"),
    ("float-for-integer", pat(multipleBirthInteger=1.5), "value",
     "Patient.multipleBirthInteger"),
    ("whole-float-for-integer", pat(multipleBirthInteger=2.0), "value",
     "Patient.multipleBirthInteger"),
    ("string-for-integer", pat(multipleBirthInteger="2"), "structure",
     "Patient.multipleBirthInteger"),
    ("boolean-for-decimal", obs(valueQuantity={"value": False}), "structure",
     "Observation.valueQuantity.value"),
    ("string-for-decimal", obs(valueQuantity={"value": "1.5"}), "structure",
     "Observation.valueQuantity.value"),
    ("nan-decimal", obs(valueQuantity={"value": float("nan")}), "value",
     "Observation.valueQuantity.value"),
    ("decimal-beyond-storage", obs(valueQuantity={"value": jsonio.loads(b"[1.5e-1001]")[0]}),
     "value", "Observation.valueQuantity.value"),
    ("decimal-too-many-fraction-digits",
     obs(valueQuantity={"value": jsonio.loads(b"[1." + b"0" * 17000 + b"]")[0]}),
     "value", "Observation.valueQuantity.value"),
    ("number-for-boolean", pat(active=1), "structure", "Patient.active"),
    ("empty-string", pat(gender=""), "value", "Patient.gender"),
    ("empty-string-in-array", pat(name=[{"given": ["Jim", ""]}]), "value",
     "Patient.name[0].given[1]"),
    ("empty-uri", pat(implicitRules=""), "value", "Patient.implicitRules"),
    ("empty-array", pat(name=[]), "structure", "Patient.name"),
    ("empty-object", pat(maritalStatus={}), "structure", "Patient.maritalStatus"),
    ("empty-object-in-array", pat(name=[{}]), "structure", "Patient.name[0]"),
    ("null-single", pat(birthDate=None), "structure", "Patient.birthDate"),
    ("null-complex-item", pat(name=[None]), "structure", "Patient.name[0]"),
    ("null-primitive-item-unpaired", pat(name=[{"given": ["Jim", None]}]), "structure",
     "Patient.name[0].given[1]"),
    ("null-paired-with-null", pat(name=[{"given": ["Jim", None], "_given": [None, None]}]),
     "structure", "Patient.name[0].given[1]"),
    ("null-sibling", pat(_birthDate=None), "structure", "Patient.birthDate"),
    ("null-sibling-item-without-values", pat(name=[{"_given": [None]}]), "structure",
     "Patient.name[0].given[0]"),
    ("missing-required", {"resourceType": "Observation", "code": {"text": "x"}}, "required",
     "Observation.status"),
    ("missing-bundle-type", {"resourceType": "Bundle"}, "required", "Bundle.type"),
    ("missing-required-nested", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"url": "Patient"}}]}, "required", "Bundle.entry[0].request.method"),
    ("missing-required-choice", {"resourceType": "MedicationRequest", "status": "active",
                                 "intent": "order", "subject": {"reference": "Patient/1"}},
     "required", "MedicationRequest.medication"),
    ("missing-extension-url", pat(extension=[{"valueString": "x"}]), "required",
     "Patient.extension[0].url"),
    ("missing-modifierExtension-url", pat(modifierExtension=[{"valueBoolean": True}]),
     "required", "Patient.modifierExtension[0].url"),
    ("missing-questionnaire-linkId", {"resourceType": "Questionnaire", "status": "draft",
                                      "item": [{"linkId": "1", "type": "group", "item": [
                                          {"type": "string"}]}]},
     "required", "Questionnaire.item[0].item[0].linkId"),
    ("two-choice-variants", pat(deceasedBoolean=True, deceasedDateTime="2020"), "structure",
     "Patient.deceasedDateTime"),
    ("two-choice-variants-by-sibling", pat(deceasedBoolean=True,
                                          _deceasedDateTime={"id": "x"}),
     "structure", "Patient._deceasedDateTime"),
    ("two-extension-values", pat(extension=[{"url": EXT, "valueString": "a",
                                             "valueCode": "b"}]),
     "structure", "Patient.extension[0].valueCode"),
    ("sibling-not-object", pat(birthDate="1970", _birthDate="x"), "structure",
     "Patient.birthDate"),
    ("sibling-unknown-element", pat(birthDate="1970", _birthDate={"value": "x"}), "structure",
     "Patient.birthDate.value"),
    ("sibling-extension-without-url", pat(_birthDate={"extension": [{"valueString": "x"}]}),
     "required", "Patient.birthDate.extension[0].url"),
    ("sibling-empty", pat(_birthDate={}), "structure", "Patient.birthDate"),
    ("sibling-array-for-single", pat(_birthDate=[{"id": "x"}]), "structure",
     "Patient.birthDate"),
    ("sibling-single-for-array", pat(name=[{"given": ["a"], "_given": {"id": "x"}}]),
     "structure", "Patient.name[0].given"),
    ("sibling-length-mismatch", pat(name=[{"given": ["a"], "_given": [None, {"id": "x"}]}]),
     "structure", "Patient.name[0].given"),
    ("sibling-array-item-content", pat(name=[{"given": ["a"], "_given": [{"foo": 1}]}]),
     "structure", "Patient.name[0].given[0].foo"),
    ("contained-error", pat(contained=[{"resourceType": "Patient", "birthDate": "x"}]),
     "value", "Patient.contained[0].birthDate"),
    ("contained-missing-resourceType", pat(contained=[{"id": "a"}]), "required",
     "Patient.contained[0].resourceType"),
    ("contained-unknown-resourceType", pat(contained=[{"resourceType": "Nope", "id": "a"}]),
     "invalid", "Patient.contained[0].resourceType"),
    ("contained-required", pat(contained=[{"resourceType": "Observation", "status": "final"}]),
     "required", "Patient.contained[0].code"),
    ("bundle-entry-error", {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": pat()}, {"resource": pat()},
        {"resource": pat(birthDate="2020-13-01")}]}, "value",
     "Bundle.entry[2].resource.birthDate"),
    ("bundle-entry-unknown", {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": pat(foo="x")}]}, "structure", "Bundle.entry[0].resource.foo"),
    ("bundle-resource-not-object", {"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": "Patient/1"}]}, "structure",
     "Bundle.entry[0].resource"),
    ("parameters-resource", {"resourceType": "Parameters", "parameter": [
        {"name": "p", "resource": {"resourceType": "Observation", "code": {"text": "x"}}}]},
     "required", "Parameters.parameter[0].resource.status"),
    ("unknown-resourceType", {"resourceType": "Patients"}, "invalid", "resourceType"),
    ("abstract-resourceType", {"resourceType": "DomainResource"}, "invalid", "resourceType"),
    ("datatype-as-resourceType", {"resourceType": "HumanName", "family": "x"}, "invalid",
     "resourceType"),
    ("non-string-resourceType", {"resourceType": 1}, "invalid", "resourceType"),
    ("missing-resourceType", {"id": "x"}, "required", "resourceType"),
    ("not-an-object", ["Patient"], "structure", "Resource"),
]


@pytest.mark.parametrize(("resource", "code", "expression"),
                         [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_error_cases(resource: Any, code: str, expression: str) -> None:
    issues = validate_resource(resource)
    assert found(issues) == [(code, expression)], issues
    issue = issues[0]
    assert issue.severity == "error"
    assert issue.diagnostics[:1].isupper()


def test_error_case_ids_unique() -> None:
    ids = [case[0] for case in ERROR_CASES]
    assert len(ids) == len(set(ids))


def test_diagnostics_wording() -> None:
    [issue] = validate_resource(pat(birthDate="2020-13-01"))
    assert issue == ValidationIssue("error", "value", "Invalid date '2020-13-01' for 'birthDate'",
                                    "Patient.birthDate")
    [issue] = validate_resource(pat(foo=1))
    assert issue.diagnostics == "Unknown element 'foo'"
    [issue] = validate_resource(pat(active="yes"))
    assert issue.diagnostics == "Expected a boolean for 'active'"
    [issue] = validate_resource({"resourceType": "Observation", "code": {"text": "x"}})
    assert issue.diagnostics == "Missing required element 'status'"
    [issue] = validate_resource({"resourceType": "MedicationRequest", "status": "active",
                                 "intent": "order", "subject": {"reference": "Patient/1"}})
    assert "medication[x]" in issue.diagnostics and "medicationReference" in issue.diagnostics


def test_expected_type() -> None:
    patient = load("Patient-example.json")
    assert validate_resource(patient, "Patient") == []
    assert found(validate_resource(patient, "Observation")) == [("invalid", "resourceType")]
    # The content is still checked against its actual type.
    assert found(validate_resource(pat(foo=1), "Observation")) == [
        ("invalid", "resourceType"), ("structure", "Patient.foo")]
    # Missing resourceType: checked against the expected type.
    assert found(validate_resource({"foo": 1}, "Patient")) == [
        ("required", "resourceType"), ("structure", "Patient.foo")]
    assert found(validate_resource(patient, "Nope")) == [("not-supported", "resourceType")]
    assert found(validate_resource("x", "Patient")) == [("structure", "Patient")]


def test_many_issues_at_once() -> None:
    resource = load("Patient-example.json")
    resource["gender"] = 1
    resource["birthDate"] = "1974-02-30"
    resource["name"][0]["given"].append("")
    resource["contact"][0]["relationship"] = {"text": "x"}
    resource["telecom"][0]["foo"] = "bar"
    assert sorted(found(validate_resource(resource))) == sorted([
        ("value", "Patient.name[0].given[2]"),
        ("structure", "Patient.telecom[0].foo"),
        ("structure", "Patient.gender"),
        ("value", "Patient.birthDate"),
        ("structure", "Patient.contact[0].relationship"),
    ])


def test_issue_cap() -> None:
    resource = pat(**{f"bad{i}": i for i in range(MAX_ISSUES * 2)})
    issues = validate_resource(resource)
    assert len(issues) == MAX_ISSUES + 1
    assert all(i.severity == "error" for i in issues[:MAX_ISSUES])
    assert (issues[-1].severity, issues[-1].code) == ("warning", "too-costly")


def test_warnings_beyond_the_cap_are_counted_and_do_not_hide_errors() -> None:
    """Many warnings (from invariants, under $validate) used to fill the cap and stop the
    walk before the errors after them; now only errors stop it."""
    from santong.validation.structure import _Stop, _Validator

    validator = _Validator()
    for n in range(MAX_ISSUES * 3):
        validator.append(ValidationIssue("warning", "invariant", f"w{n}", "Patient"))
    validator.append(ValidationIssue("error", "invariant", "the error", "Patient.name"))
    assert len(validator.issues) == MAX_ISSUES + 1
    assert validator.issues[-1].diagnostics == "the error"
    assert validator.unshown_warnings == MAX_ISSUES * 2
    with pytest.raises(_Stop):
        for n in range(MAX_ISSUES):
            validator.append(ValidationIssue("error", "value", f"e{n}", "Patient"))


def test_deep_nesting_is_reported_not_crashing() -> None:
    item: dict[str, Any] = {"linkId": "leaf", "type": "display"}
    for i in range(400):
        item = {"linkId": str(i), "type": "group", "item": [item]}
    issues = validate_resource({"resourceType": "Questionnaire", "status": "draft",
                                "item": [item]})
    assert [i.code for i in issues] == ["structure"]
    assert "nested deeper" in issues[0].diagnostics


def test_base64_regex_is_linear() -> None:
    # The spec regex backtracks exponentially here (seconds at this size, years at 30 groups).
    data = "AAAA  " * 18 + "A"
    start = time.perf_counter()
    issues = validate_resource({"resourceType": "Binary", "contentType": "x/y", "data": data})
    assert time.perf_counter() - start < 0.5
    assert found(issues) == [("value", "Binary.data")]


def test_validation_does_not_mutate_input() -> None:
    resource = load("Bundle-bundle-example.json")
    before = copy.deepcopy(resource)
    validate_resource(resource)
    assert resource == before


# -- required bindings ------------------------------------------------------------------------

_spec = importlib.util.spec_from_file_location(
    "gen_r4_definitions", ROOT / "tools" / "gen_r4_definitions.py")
assert _spec is not None and _spec.loader is not None
gen_r4_definitions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_r4_definitions)

CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def condition(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": "Patient/1"}, **extra}


BINDING_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("code", pat(gender="banana"), "Patient.gender"),
    ("code-publication-status", {"resourceType": "ValueSet", "status": "nonsense"},
     "ValueSet.status"),
    ("code-in-backbone", pat(contact=[{"gender": "x"}]), "Patient.contact[0].gender"),
    ("code-in-datatype", pat(telecom=[{"system": "pigeon", "value": "x"}]),
     "Patient.telecom[0].system"),
    ("code-of-datatype-in-choice", {"resourceType": "Observation", "status": "final",
                                    "code": {"text": "x"},
                                    "valueQuantity": {"value": 1, "comparator": "~"}},
     "Observation.valueQuantity.comparator"),
    ("code-array", {"resourceType": "SearchParameter", "url": "http://x/sp", "name": "x",
                    "status": "active", "description": "x", "code": "x", "type": "token",
                    "base": ["Patient", "Patients"]}, "SearchParameter.base[1]"),
    ("code-in-contained", pat(contained=[{"resourceType": "Observation", "status": "done",
                                          "code": {"text": "x"}}]),
     "Patient.contained[0].status"),
    ("code-in-bundle", {"resourceType": "Bundle", "type": "transactions"}, "Bundle.type"),
    ("codeable-concept-wrong-code", condition(clinicalStatus={"coding": [
        {"system": CONDITION_CLINICAL, "code": "gone"}]}), "Condition.clinicalStatus"),
    ("codeable-concept-wrong-system", condition(clinicalStatus={"coding": [
        {"system": "http://example.org/status", "code": "active"}]}),
     "Condition.clinicalStatus"),
    ("codeable-concept-text-only", condition(clinicalStatus={"text": "active"}),
     "Condition.clinicalStatus"),
]


@pytest.mark.parametrize(("resource", "expression"), [case[1:] for case in BINDING_CASES],
                         ids=[case[0] for case in BINDING_CASES])
def test_required_binding_errors(resource: dict[str, Any], expression: str) -> None:
    issues = validate_resource(resource)
    assert found(issues) == [("code-invalid", expression)], issues
    assert issues[0].severity == "error"


def test_required_binding_diagnostics_name_the_codes() -> None:
    [issue] = validate_resource(pat(gender="banana"))
    assert issue.diagnostics == (
        "Unknown code 'banana' for 'gender': the required value set "
        "http://hl7.org/fhir/ValueSet/administrative-gender has female, male, other, unknown")
    # Long value sets are cut short, with their size.
    [issue] = validate_resource({"resourceType": "CapabilityStatement", "status": "active",
                                 "date": "2024", "kind": "instance", "fhirVersion": "4.0.1",
                                 "format": ["json"],
                                 "rest": [{"mode": "server", "resource": [{"type": "Patients"}]}]})
    assert issue.expression == "CapabilityStatement.rest[0].resource[0].type"
    assert "Account, ActivityDefinition" in issue.diagnostics
    assert issue.diagnostics.endswith("… (148 codes)") and len(issue.diagnostics) < 400
    [issue] = validate_resource(condition(clinicalStatus={"coding": [
        {"system": CONDITION_CLINICAL, "code": "gone"}, {"code": "active"}]}))
    assert f"found {CONDITION_CLINICAL}|gone, active" in issue.diagnostics
    assert "active, inactive, recurrence, relapse, remission, resolved" in issue.diagnostics


def test_required_bindings_accept_their_codes() -> None:
    for gender in ("male", "female", "other", "unknown"):
        assert validate_resource(pat(gender=gender)) == []
    # One coding from the value set is enough; the others may be anything.
    assert validate_resource(condition(clinicalStatus={"coding": [
        {"system": "http://example.org/status", "code": "x"},
        {"system": CONDITION_CLINICAL, "code": "active"}]})) == []
    # An extension in place of the value (data-absent-reason) is not a code to check.
    assert validate_resource(pat(_gender={"extension": [
        {"url": EXT, "valueCode": "asked-unknown"}]})) == []
    # Bindings to terminologies outside the R4 package are not checked: MIME types, currencies.
    assert validate_resource({"resourceType": "Binary", "contentType": "x-unknown/whatever"}) == []
    assert validate_resource({"resourceType": "Invoice", "status": "draft", "totalNet": {
        "value": 1, "currency": "XYZ"}}) == []


def test_required_binding_data() -> None:
    gender = definitions.structure("Patient").elements["gender"].binding
    assert gender is not None
    assert gender.codes == {"male", "female", "other", "unknown"}
    assert ("http://hl7.org/fhir/administrative-gender", "male") in gender.pairs
    clinical = definitions.structure("Condition").elements["clinicalStatus"].binding
    assert clinical is not None and (CONDITION_CLINICAL, "active") in clinical.pairs
    # Versioned canonicals in the snapshots resolve to the same value set.
    assert definitions.structure("Observation").elements["status"].binding is not None
    for external in (("Attachment", "contentType"), ("Money", "currency"),
                     ("Timing.repeat", "durationUnit")):
        element = definitions.structure(external[0]).elements[external[1]]
        assert (element.binding is None) == (external[1] != "durationUnit"), external
    # Only coded elements carry bindings.
    for struct_name in ("Patient", "Observation", "Bundle.entry.request", "Quantity"):
        for element in definitions.structure(struct_name).elements.values():
            if element.binding is not None:
                assert element.type in ("code", "Coding", "CodeableConcept")


def test_every_official_example_is_valid_but_the_known_invalid() -> None:
    """All resources of the R4 package: structure, required bindings and base invariants; the
    few that break the rules themselves are listed, with why, in tools/gen_r4_definitions.py."""
    invalid: dict[str, list[ValidationIssue]] = {}
    count = 0
    for path in gen_r4_definitions.example_files(r4_base()):
        resource = orjson.loads(path.read_bytes())
        count += 1
        issues = [i for i in validate_resource(resource, invariants="all")
                  if i.severity == "error"]
        if issues:
            invalid[path.name] = issues
    assert count > 5000
    assert set(invalid) == set(gen_r4_definitions.KNOWN_INVALID), {
        name: issues[:3] for name, issues in invalid.items()
        if name not in gen_r4_definitions.KNOWN_INVALID}
    assert not any(i.code == "code-invalid" for issues in invalid.values() for i in issues)
