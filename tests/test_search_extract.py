"""Search parameter definitions and value extraction (santong.search.parameters / .extract).

http://hl7.org/fhir/R4/searchparameter.html, http://hl7.org/fhir/R4/search.html. Pure unit
tests: no database.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.helpers import r4_base

from santong.generate import Dataset
from santong.search import extract, index, parameters, transforms
from santong.search.extract import ExtractionError, Node
from santong.search.parameters import InvalidSearchParameter, parameters_for

FIXTURES = Path(__file__).parent / "fixtures" / "r4"
SP = "http://hl7.org/fhir/SearchParameter/"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def values(resource: dict[str, Any], code: str) -> list[tuple[str, Any]]:
    param = parameters.get(resource["resourceType"], code)
    assert param is not None, code
    return [(n.type, n.value) for n in extract.extract(resource, param)]


def ref(reference: str, **more: Any) -> dict[str, Any]:
    return {"reference": reference, **more}


# --- the parameter registry ----------------------------------------------------------------


def test_parameters_for_includes_common_parameters() -> None:
    patient = parameters.parameters_for("Patient")
    for code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text",
                 "_content", "name", "birthdate", "phone", "organization", "deceased"):
        assert code in patient, code
    assert patient["_id"].expression == "Resource.id"
    assert patient["_lastUpdated"].comparators[:2] == ("eq", "ne")
    # Bundle, Binary and Parameters are Resources but not DomainResources: no _text.
    assert "_text" not in parameters.parameters_for("Bundle")
    assert "_id" in parameters.parameters_for("Binary")
    assert "composition" in parameters.parameters_for("Bundle")


def test_shared_parameter_is_restricted_to_the_base() -> None:
    condition = parameters.get("Condition", "patient")
    assert condition is not None
    assert condition.url == SP + "clinical-patient"
    assert condition.expression == "Condition.subject.where(resolve() is Patient)"
    assert condition.type == "reference"
    assert condition.targets == ("Patient", "Group")  # as R4 lists them
    assert "Condition" in condition.base and "AllergyIntolerance" in condition.base
    assert parameters.get("AllergyIntolerance", "patient").expression == (  # type: ignore[union-attr]
        "AllergyIntolerance.patient"
    )
    whole = parameters.by_url(SP + "clinical-patient")
    assert whole is not None
    assert "Condition.subject.where(resolve() is Patient)" in whole.expression  # type: ignore[operator]
    assert "AllergyIntolerance.patient" in whole.expression  # type: ignore[operator]


def test_lookup_misses() -> None:
    assert parameters.get("Patient", "no-such-code") is None
    assert parameters.get("NoSuchType", "name") is None
    assert parameters.by_url(SP + "nope") is None
    with pytest.raises(KeyError):
        parameters.parameters_for("NoSuchType")


def test_composite_definition() -> None:
    param = parameters.get("Observation", "code-value-quantity")
    assert param is not None and param.type == "composite"
    # R4 lists `Observation | code | value.as(Quantity)`: the component parts are dropped.
    assert param.expression == "Observation"
    assert param.components == (
        (SP + "clinical-code", "code"),
        (SP + "Observation-value-quantity", "value.as(Quantity)"),
    )


def test_every_standard_expression_compiles() -> None:
    for rtype in sorted(parameters.resource_types()):
        for code, param in parameters.parameters_for(rtype).items():
            for expr in filter(None, (param.expression, *(e for _, e in param.components))):
                assert extract.fallback_reason(rtype, expr) is None, (rtype, code, expr)


# --- extraction, table-driven --------------------------------------------------------------

CONDITION = {
    "resourceType": "Condition",
    "id": "c1",
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                   "condition-clinical", "code": "active"}]},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
    "subject": ref("Patient/p1"),
    "encounter": ref("Encounter/e1"),
    "onsetAge": {"value": 52, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
    "abatementDateTime": "2020-03-01",
    "recordedDate": "2019-12-30T10:00:00+08:00",
}
TASK = {
    "resourceType": "Task",
    "id": "t1",
    "status": "requested",
    "intent": "order",
    "for": ref("http://hospital.example/fhir/Patient/p1/_history/3"),
    "owner": ref("PractitionerRole/pr1"),
    "executionPeriod": {"start": "2024-01-01T08:00:00Z"},
    "businessStatus": {"text": "waiting"},
}
APPOINTMENT = {
    "resourceType": "Appointment",
    "id": "a1",
    "status": "booked",
    "start": "2024-05-01T09:00:00+08:00",
    "participant": [
        {"actor": ref("Patient/p1"), "status": "accepted"},
        {"actor": ref("Practitioner/dr1"), "status": "accepted"},
        {"actor": ref("Location/room1"), "status": "accepted"},
        {"actor": {"identifier": {"value": "x"}, "type": "Patient"}, "status": "tentative"},
    ],
}
ORGANIZATION = {
    "resourceType": "Organization",
    "id": "o1",
    "active": True,
    "name": "县人民医院",
    "alias": ["County Hospital"],
    "partOf": ref("Organization/yigongti"),
    "address": [{"city": "三通县", "postalCode": "100000"}],
    "telecom": [{"system": "phone", "value": "0101234567"}],
}
PRACTITIONER_ROLE = {
    "resourceType": "PractitionerRole",
    "id": "pr1",
    "practitioner": ref("Practitioner/dr1"),
    "organization": ref("Organization/o1"),
    "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
    "telecom": [{"system": "email", "value": "dr1@hospital.example"},
                {"system": "phone", "value": "110"}],
}
PRACTITIONER = {
    "resourceType": "Practitioner",
    "id": "dr1",
    "name": [{"family": "李", "given": ["四"]}],
    "telecom": [{"system": "email", "value": "li@example.org"}],
    "qualification": [{"code": {"text": "MD"}}],
}

CASES: list[tuple[str, dict[str, Any], str, list[tuple[str, Any]]]] = [
    ("patient-name", fixture("Patient-example"), "family",
     [("string", "Chalmers"), ("string", "Windsor")]),
    ("patient-given", fixture("Patient-example"), "given",
     # No union, so no de-duplication: the maiden name repeats the given names.
     [("string", n) for n in ("Peter", "James", "Jim", "Peter", "James")]),
    ("patient-birthdate", fixture("Patient-example"), "birthdate", [("date", "1974-12-25")]),
    ("patient-gender", fixture("Patient-example"), "gender", [("code", "male")]),
    ("patient-id", fixture("Patient-example"), "_id", [("id", "example")]),
    ("patient-org", fixture("Patient-example"), "organization",
     [("Reference", {"reference": "Organization/1"})]),
    ("patient-deceased-false", fixture("Patient-example"), "deceased", [("boolean", False)]),
    ("patient-deceased-date",
     {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}, "deceased",
     [("boolean", True)]),
    ("patient-death-date",
     {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}, "death-date",
     [("dateTime", "2020-01-01")]),
    ("patient-no-death-date", {"resourceType": "Patient", "deceasedBoolean": True},
     "death-date", []),
    ("newborn-birthdate-with-extension", fixture("Patient-newborn"), "birthdate",
     [("date", "2017-09-05")]),
    ("patient-tag", {"resourceType": "Patient", "meta": {
        "tag": [{"system": "urn:santong", "code": "vip"}], "lastUpdated": "2024-01-01T00:00:00Z",
        "profile": ["http://example.org/p"], "source": "urn:s"}}, "_tag",
     [("Coding", {"system": "urn:santong", "code": "vip"})]),
    ("patient-lastupdated", {"resourceType": "Patient", "meta": {
        "lastUpdated": "2024-01-01T00:00:00Z"}}, "_lastUpdated",
     [("instant", "2024-01-01T00:00:00Z")]),
    ("patient-profile", {"resourceType": "Patient", "meta": {"profile": ["http://e.org/p"]}},
     "_profile", [("canonical", "http://e.org/p")]),
    ("encounter-class", fixture("Encounter-example"), "class", [("Coding", {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
        "display": "inpatient encounter"})]),
    ("encounter-patient", fixture("Encounter-example"), "patient",
     [("Reference", {"reference": "Patient/example"})]),
    ("encounter-status", fixture("Encounter-example"), "status", [("code", "in-progress")]),
    ("servicerequest-code", fixture("ServiceRequest-example"), "code", [("CodeableConcept", {
        "coding": [{"system": "http://snomed.info/sct", "code": "303653007",
                    "display": "Computed tomography of head"}]})]),
    ("servicerequest-patient", fixture("ServiceRequest-example"), "patient",
     [("Reference", {"reference": "Patient/example"})]),
    ("careplan-activity-date", fixture("CarePlan-example"), "activity-date",
     [("Timing", {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}})]),
    ("careplan-condition-contained", fixture("CarePlan-example"), "condition",
     [("Reference", {"reference": "#p1", "display": "obesity"})]),
    ("careplan-date", fixture("CarePlan-example"), "date", [("Period", {"end": "2017-06-01"})]),
    ("careteam-participant", fixture("CareTeam-example"), "participant", [
        ("Reference", {"reference": "Patient/example", "display": "Peter James Chalmers"}),
        ("Reference", {"reference": "#pr1", "display": "Dorothy Dietition"})]),
    ("observation-code", fixture("Observation-body-temperature"), "code", [("CodeableConcept", {
        "coding": [{"system": "http://loinc.org", "code": "8310-5",
                    "display": "Body temperature"}], "text": "Body temperature"})]),
    ("observation-value-quantity", fixture("Observation-body-temperature"), "value-quantity", [
        ("Quantity", {"value": 36.5, "unit": "C", "system": "http://unitsofmeasure.org",
                      "code": "Cel"})]),
    ("observation-date", fixture("Observation-body-temperature"), "date",
     [("dateTime", "1999-07-02")]),
    ("condition-onset-age", CONDITION, "onset-age", [("Age", CONDITION["onsetAge"])]),
    ("condition-onset-date-none", CONDITION, "onset-date", []),
    ("condition-abatement-date", CONDITION, "abatement-date", [("dateTime", "2020-03-01")]),
    ("condition-clinical-status", CONDITION, "clinical-status",
     [("CodeableConcept", CONDITION["clinicalStatus"])]),
    ("condition-recorded", CONDITION, "recorded-date",
     [("dateTime", "2019-12-30T10:00:00+08:00")]),
    ("condition-patient", CONDITION, "patient", [("Reference", ref("Patient/p1"))]),
    ("task-patient-absolute", TASK, "patient", [("Reference", TASK["for"])]),
    ("task-owner", TASK, "owner", [("Reference", ref("PractitionerRole/pr1"))]),
    ("task-period", TASK, "period", [("Period", {"start": "2024-01-01T08:00:00Z"})]),
    ("task-business-status", TASK, "business-status", [("CodeableConcept", {"text": "waiting"})]),
    ("appointment-patient", APPOINTMENT, "patient", [
        ("Reference", ref("Patient/p1")),
        ("Reference", {"identifier": {"value": "x"}, "type": "Patient"})]),
    ("appointment-practitioner", APPOINTMENT, "practitioner",
     [("Reference", ref("Practitioner/dr1"))]),
    ("appointment-location", APPOINTMENT, "location", [("Reference", ref("Location/room1"))]),
    ("appointment-date", APPOINTMENT, "date", [("instant", "2024-05-01T09:00:00+08:00")]),
    ("organization-name", ORGANIZATION, "name",
     [("string", "县人民医院"), ("string", "County Hospital")]),
    ("organization-partof", ORGANIZATION, "partof", [("Reference", ref("Organization/yigongti"))]),
    ("organization-address-city", ORGANIZATION, "address-city", [("string", "三通县")]),
    ("organization-active", ORGANIZATION, "active", [("boolean", True)]),
    ("practitionerrole-email", PRACTITIONER_ROLE, "email",
     [("ContactPoint", {"system": "email", "value": "dr1@hospital.example"})]),
    ("practitionerrole-phone", PRACTITIONER_ROLE, "phone",
     [("ContactPoint", {"system": "phone", "value": "110"})]),
    ("practitionerrole-practitioner", PRACTITIONER_ROLE, "practitioner",
     [("Reference", ref("Practitioner/dr1"))]),
    ("practitionerrole-specialty", PRACTITIONER_ROLE, "specialty",
     [("CodeableConcept", PRACTITIONER_ROLE["specialty"][0])]),
    ("practitioner-name", PRACTITIONER, "name", [("HumanName", PRACTITIONER["name"][0])]),
    ("practitioner-email", PRACTITIONER, "email",
     [("ContactPoint", {"system": "email", "value": "li@example.org"})]),
    ("practitioner-phone-none", PRACTITIONER, "phone", []),
    ("bundle-composition-indexer", {"resourceType": "Bundle", "type": "document", "entry": [
        {"resource": {"resourceType": "Composition", "id": "c"}},
        {"resource": {"resourceType": "Patient", "id": "p"}}]}, "composition",
     [("Composition", {"resourceType": "Composition", "id": "c"})]),
    ("questionnaire-code", fixture("Questionnaire-f201"), "status", [("code", "active")]),
]


@pytest.mark.parametrize(
    ("resource", "code", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_extract(resource: dict[str, Any], code: str, expected: list[tuple[str, Any]]) -> None:
    assert values(resource, code) == expected


# --- choice elements -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "value", "code", "ftype"),
    [
        ("valueQuantity", {"value": 1, "unit": "mg"}, "value-quantity", "Quantity"),
        ("valueCodeableConcept", {"coding": [{"code": "pos"}]}, "value-concept",
         "CodeableConcept"),
        ("valueString", "positive", "value-string", "string"),
        ("valueDateTime", "2024-01-01", "value-date", "dateTime"),
        ("valuePeriod", {"start": "2024-01-01"}, "value-date", "Period"),
        ("valueSampledData", {"origin": {"value": 0}, "period": 1, "dimensions": 1},
         "value-quantity", "SampledData"),
    ],
)
def test_choice_value_is_typed_by_the_variant_present(
    element: str, value: Any, code: str, ftype: str
) -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           element: value}
    assert values(obs, code) == [(ftype, value)]
    # The other variants' parameters select nothing.
    others = {"value-quantity", "value-concept", "value-string", "value-date"} - {code}
    for other in others:
        assert values(obs, other) == [], other


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Observation.value", [("Quantity", {"value": 1})]),
        ("Observation.effective", [("Period", {"start": "2024"})]),
        ("(Observation.value as Quantity)", [("Quantity", {"value": 1})]),
        ("Observation.value.as(Quantity)", [("Quantity", {"value": 1})]),
        ("Observation.value.ofType(Quantity)", [("Quantity", {"value": 1})]),
        ("Observation.value.ofType(string)", []),
        ("Observation.effective.as(dateTime)", []),
        ("Observation.value is Quantity", [("boolean", True)]),
        ("Observation.value.exists()", [("boolean", True)]),
        ("Observation.issued.empty()", [("boolean", True)]),
        ("Observation.component.code.first()", [("CodeableConcept", {"text": "a"})]),
        ("Observation.component.code.last()", [("CodeableConcept", {"text": "b"})]),
        ("Observation.component.value.count()", [("integer", 2)]),
        ("Observation.component.where(code.text = 'b').value",
         [("CodeableConcept", {"text": "vb"})]),
        ("Observation.component.where(code.text != 'b').value", [("string", "va")]),
        ("Observation.component.code | Observation.component.code", [
            ("CodeableConcept", {"text": "a"}), ("CodeableConcept", {"text": "b"})]),
        ("%resource.status", [("code", "final")]),
        ("Observation.extension('urn:x').value", [("Coding", {"code": "c"})]),
        ("Observation.extension.where(url = 'urn:x').value.code", [("code", "c")]),
        ("Observation.status.exists() and Observation.value.exists().not()",
         [("boolean", False)]),
        ("Observation.issued.exists() or Observation.status = 'final'", [("boolean", True)]),
    ],
)
def test_compiled_expressions(expression: str, expected: list[tuple[str, Any]]) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "extension": [{"url": "urn:x", "valueCoding": {"code": "c"}}],
        "code": {"text": "x"},
        "valueQuantity": {"value": 1},
        "effectivePeriod": {"start": "2024"},
        "component": [
            {"code": {"text": "a"}, "valueString": "va"},
            {"code": {"text": "b"}, "valueCodeableConcept": {"text": "vb"}},
        ],
    }
    assert extract.fallback_reason("Observation", expression) is None
    param = _adhoc("Observation", expression)
    assert [(n.type, n.value) for n in extract.extract(obs, param)] == expected
    assert sorted(map(_json, (n.value for n in extract.extract(obs, param)))) == sorted(
        map(_json, extract.reference_evaluate(obs, expression))
    )


def _adhoc(rtype: str, expression: str) -> parameters.SearchParameter:
    return parameters.SearchParameter(
        code="x", base=(rtype,), type="token", url="urn:test", expression=expression,
        targets=(), modifiers=(), comparators=(), components=(),
    )


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# --- resolve() -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "rtype"),
    [
        (ref("Patient/1"), "Patient"),
        (ref("Patient/1/_history/2"), "Patient"),
        (ref("https://other.example/fhir/Patient/1"), "Patient"),
        (ref("https://other.example/fhir/Patient/1/_history/7"), "Patient"),
        (ref("Group/g1"), "Group"),
        (ref("#pat"), "Patient"),
        (ref("#dev"), "Device"),
        (ref("#missing"), None),
        (ref("urn:uuid:8c3b5c4e-0000-4000-8000-000000000001"), None),
        (ref("urn:uuid:8c3b5c4e-0000-4000-8000-000000000001", type="Patient"), "Patient"),
        ({"identifier": {"value": "1"}, "type": "http://hl7.org/fhir/StructureDefinition/Patient"},
         "Patient"),
        ({"display": "someone"}, None),
        (ref("NotAType/1"), None),
    ],
)
def test_resolve_is(reference: dict[str, Any], rtype: str | None) -> None:
    condition = {
        "resourceType": "Condition",
        "contained": [{"resourceType": "Patient", "id": "pat"},
                      {"resourceType": "Device", "id": "dev"}],
        "subject": reference,
    }
    assert extract.reference_type(reference, condition) == rtype
    expected = [("Reference", reference)] if rtype == "Patient" else []
    assert values(condition, "patient") == expected
    assert extract.reference_evaluate(condition, "Condition.subject.where(resolve() is Patient)") \
        == [v for _, v in expected]


# --- composites ----------------------------------------------------------------------------

BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 107, "unit": "mmHg"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 60, "unit": "mmHg"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "x"}]},
         "valueString": "n/a"},
    ],
}


def test_composite_on_the_resource() -> None:
    obs = fixture("Observation-body-temperature")
    param = parameters.get("Observation", "code-value-quantity")
    assert param is not None
    [(node, (codes, quantities))] = extract.extract_composite(obs, param)
    assert node.type == "Observation"
    assert codes == [Node("CodeableConcept", obs["code"])]
    assert quantities == [Node("Quantity", obs["valueQuantity"])]


def test_composite_per_component() -> None:
    param = parameters.get("Observation", "component-code-value-quantity")
    assert param is not None
    rows = extract.extract_composite(BLOOD_PRESSURE, param)
    assert [node.type for node, _ in rows] == ["Observation.component"] * 3
    pairs = [(c[0].value["coding"][0]["code"], [q.value["value"] for q in qs])
             for _, (c, qs) in rows]
    assert pairs == [("8480-6", [107]), ("8462-4", [60]), ("x", [])]
    combo = parameters.get("Observation", "combo-code-value-quantity")
    assert combo is not None
    assert [n.type for n, _ in extract.extract_composite(BLOOD_PRESSURE, combo)] == [
        "Observation", *["Observation.component"] * 3]
    # The helper for one value:
    node = rows[0][0]
    assert extract.evaluate_relative("Observation", "value.as(Quantity)", node, BLOOD_PRESSURE) \
        == [Node("Quantity", {"value": 107, "unit": "mmHg"})]


def test_component_value_quantity_union() -> None:
    assert values(BLOOD_PRESSURE, "component-value-quantity") == [
        ("Quantity", {"value": 107, "unit": "mmHg"}), ("Quantity", {"value": 60, "unit": "mmHg"})]
    assert values(BLOOD_PRESSURE, "component-code")[0][0] == "CodeableConcept"


# --- agreement with fhirpathpy on the fixtures -----------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_fixture_agrees_with_fhirpathpy(name: str) -> None:
    resource = fixture(name)
    for code, param in parameters.parameters_for(resource["resourceType"]).items():
        if param.expression is None or transforms.for_url(param.url) is not None:
            continue  # a transform's values are not FHIRPath's (tests/test_pinyin_search.py)
        got = sorted(_json(n.value) for n in extract.extract(resource, param))
        want = sorted(_json(v) for v in extract.reference_evaluate(resource, param.expression))
        assert got == want, code


def test_extract_all_and_extractor_cache() -> None:
    patient = fixture("Patient-example")
    found = extract.extract_all(patient)
    assert found["_id"] == [Node("id", "example")]
    assert "email" not in found  # empty ones are left out
    param = parameters.get("Patient", "name")
    assert param is not None
    assert extract.extractor("Patient", param) is extract.extractor("Patient", param)
    text = parameters.get("Patient", "_text")
    assert text is not None and extract.extractor("Patient", text)(patient) == []


# --- fallback and custom parameters -----------------------------------------------------------


def test_fallback_to_fhirpathpy_is_typed() -> None:
    patient = fixture("Patient-example")
    expression = ("Patient.name.where(family.lower().startsWith('cha')) | "
                  "Patient.telecom.where(rank > 1)")
    reason = extract.fallback_reason("Patient", expression)
    assert reason is not None and "lower" in reason
    got = [(n.type, n.value) for n in extract.extract(patient, _adhoc("Patient", expression))]
    assert got == [
        ("HumanName", patient["name"][0]),
        ("ContactPoint", patient["telecom"][2]),
    ]
    assert extract.fallback_reason("Patient", "Patient.name.given.substring(1").startswith(
        "syntax"
    )


def test_fallback_errors_are_extraction_errors() -> None:
    param = _adhoc("Patient", "Patient.name.family + 1")
    with pytest.raises(ExtractionError):
        extract.extract(fixture("Patient-example"), param)


CUSTOM_URL = "http://santong.example/fhir/SearchParameter/patient-ethnicity"


def custom(**overrides: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "SearchParameter",
        "url": CUSTOM_URL,
        "name": "PatientEthnicity",
        "status": "active",
        "description": "民族 (ethnicity) of a patient",
        "code": "ethnicity",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.extension('http://santong.example/ethnicity').value",
    }
    resource.update(overrides)
    return {k: v for k, v in resource.items() if v is not None}


@pytest.fixture
def cleanup() -> Iterator[None]:
    yield
    parameters.unregister(CUSTOM_URL)
    parameters.unregister(CUSTOM_URL + "-2")


@pytest.mark.usefixtures("cleanup")
def test_register_custom_parameter() -> None:
    param = parameters.register(custom())
    assert param.custom and param.code == "ethnicity" and param.type == "token"
    assert parameters.by_url(CUSTOM_URL) == param
    assert parameters.get("Patient", "ethnicity") == param
    assert "ethnicity" in parameters.parameters_for("Patient")
    assert parameters.get("Observation", "ethnicity") is None
    patient = {
        "resourceType": "Patient",
        "extension": [{"url": "http://santong.example/ethnicity",
                       "valueCoding": {"system": "urn:gb:3304", "code": "01", "display": "汉族"}}],
    }
    assert values(patient, "ethnicity") == [
        ("Coding", {"system": "urn:gb:3304", "code": "01", "display": "汉族"})]
    assert extract.extract_all(patient)["ethnicity"][0].type == "Coding"

    # Registering the same url again replaces it.
    parameters.register(custom(code="minzu"))
    assert parameters.get("Patient", "ethnicity") is None
    assert parameters.get("Patient", "minzu") is not None
    assert "ethnicity" not in extract.extract_all(patient)

    assert parameters.unregister(CUSTOM_URL)
    assert parameters.get("Patient", "minzu") is None
    assert not parameters.unregister(CUSTOM_URL)
    assert not parameters.unregister(SP + "Patient-name")  # standard ones stay


@pytest.mark.usefixtures("cleanup")
def test_register_multi_base_and_common() -> None:
    param = parameters.register(custom(
        url=CUSTOM_URL + "-2", code="county-code", base=["Patient", "Organization"],
        expression="Patient.address.district | Organization.address.district", type="string"))
    assert param.expression == "Patient.address.district | Organization.address.district"
    org = parameters.get("Organization", "county-code")
    assert org is not None and org.expression == "Organization.address.district"
    assert values({"resourceType": "Organization", "address": [{"district": "三通"}]},
                  "county-code") == [("string", "三通")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resourceType": "Patient"}, "not a SearchParameter"),
        ({"base": ["NoSuchType"]}, "base"),
        ({"type": "fuzzy"}, "type"),
        ({"code": "bad code"}, "code"),
        ({"expression": None}, "expression is required"),
        ({"expression": "Patient.name.where("}, "syntax"),
        ({"expression": "Observation.code"}, "not a base"),
        ({"url": SP + "Patient-name", "code": "name"}, "standard"),
        ({"code": "name"}, "already has"),
        ({"type": "composite"}, "component"),
        ({"target": ["Nope"], "type": "reference"}, "target"),
    ],
)
def test_register_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSearchParameter, match=message):
        parameters.register(custom(**overrides))
    assert parameters.by_url(CUSTOM_URL) is None


# --- indexing skips parameters whose elements a resource lacks -------------------------------


@pytest.mark.parametrize(("expression", "elements"), [
    ("Patient.name", {"name"}),
    ("(Observation.value as Quantity) | (Observation.value as SampledData)", {"value"}),
    ("Observation.extension('http://x').value", {"extension"}),
    ("Resource.meta.tag", {"meta"}),
    ("Bundle.entry[0].resource", {"entry"}),
    ("Account.subject.where(resolve() is Patient) | Account.owner", {"subject", "owner"}),
    ("Observation", None),  # the resource itself (composites)
    ("Patient.where(name.exists())", None),  # a function on the resource
    ("%resource.name", None),
    ("Observation.component.where(code = 'a' | 'b').value", {"component"}),
])
def test_first_elements(expression: str, elements: set[str] | None) -> None:
    found = index.first_elements(expression)
    assert (found if found is None else set(found)) == elements


def test_element_names_of_choice_and_primitive_extension_keys() -> None:
    assert "multipleBirth" in index._element_names("multipleBirthBoolean")
    assert "value" in index._element_names("valueQuantity")
    assert "birthDate" in index._element_names("_birthDate")


def _official_examples() -> Iterator[dict[str, Any]]:
    for path in sorted(r4_base().glob("*.json")):
        resource = orjson.loads(path.read_bytes())
        if isinstance(resource, dict) and "resourceType" in resource and parameters_for(
                resource["resourceType"]) and resource["resourceType"] != "Bundle":
            yield resource


def test_skipping_absent_elements_never_changes_the_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Over every official R4 example and a generated community, indexing with the element
    gate gives exactly the rows that evaluating every parameter gives."""
    examples = list(_official_examples())
    assert len(examples) > 2000
    examples += Dataset(20, seed=5).resources()
    gated = [_as_multisets(index.index_rows(r)) for r in examples]
    monkeypatch.setattr(index, "first_elements", lambda expression: None)
    monkeypatch.setattr(index, "_plans", {})  # planned again, without the gate
    assert not index._plan("Patient").by_element
    for resource, rows in zip(examples, gated, strict=True):
        assert rows == _as_multisets(index.index_rows(resource)), (
            resource["resourceType"], resource.get("id"))


def _as_multisets(rows: index.IndexRows) -> dict[str, Counter[tuple[Any, ...]]]:
    """Each table's rows, in no order (the order parameters are evaluated in is free)."""
    return {f.name: Counter(getattr(rows, f.name)) for f in dataclasses.fields(rows)}


@pytest.mark.parametrize("expression", [
    "Patient.deceased.exists() and Patient.deceased != false",
    "Patient.name.empty()",
    "Patient.name.union(Patient.contact.name)",
    "Patient.name.count()",
    "Observation.value is Quantity",
])
def test_first_elements_refuses_what_gives_values_from_nothing(expression: str) -> None:
    assert index.first_elements(expression) is None


def test_a_concept_text_a_coding_already_carries_is_not_a_row_of_its_own() -> None:
    """A CodeableConcept's text gets a text-only token row for `:text`, unless a coding's
    display (normalised alike) is the same text: that coding's row already matches it."""
    def type_rows(concept: dict[str, Any]) -> list[tuple[Any, ...]]:
        encounter = {"resourceType": "Encounter", "id": "e", "status": "finished",
                     "type": [concept]}
        return sorted((r[1:] for r in index.index_rows(encounter).token if r[0] == "type"),
                      key=repr)

    outpatient = [{"system": "urn:types", "code": "op", "display": "门诊"},
                  {"system": "urn:oid:2.16.156.10011.2.3.1.271", "code": "1",
                   "display": "Outpatient"}]
    assert type_rows({"coding": outpatient, "text": "门诊"}) == [
        ("urn:oid:2.16.156.10011.2.3.1.271", "1", "outpatient", None, None),
        ("urn:types", "op", "门诊", None, None)]
    assert type_rows({"coding": outpatient, "text": "OUTPATIENT"}) == type_rows(
        {"coding": outpatient})
    assert (None, None, "门诊部", None, None) in type_rows({"coding": outpatient, "text": "门诊部"})
    assert type_rows({"text": "门诊"}) == [(None, None, "门诊", None, None)]


def test_content_document_keeps_each_string_where_it_stands() -> None:
    """Phrases match on word positions across the document: a repeated string is kept in
    place, so the second name's words stay next to each other (`_content=Li Hua`) and the
    first name's given name is not joined to the second's (`Ming Hua`)."""
    patient = {"resourceType": "Patient", "name": [{"family": "Li", "given": ["Ming"]},
                                                   {"family": "Li", "given": ["Hua"]}]}
    [(_, document)] = index.index_rows(patient).text
    assert "li hua" in document and "ming hua" not in document


def test_content_document_is_text_and_codes_not_meta_or_dates() -> None:
    """`_content`'s document: the resource's words and codes; not meta (version, lastUpdated,
    tags: about the record) and not dates or times, whose pieces (`2024`, `-05`, `t12`) would
    be the commonest entries of the full-text index and match nothing meant as a word."""
    task = {"resourceType": "Task", "id": "t1", "status": "completed",
            "meta": {"versionId": "7", "lastUpdated": "2026-11-26T17:08:42.418Z",
                     "tag": [{"code": "metatag", "display": "元标签"}]},
            "authoredOn": "2024-05-17T12:49:00+08:00", "executionPeriod": {"start": "2024-05"},
            "note": [{"text": "已完成 2024 回转", "time": "2024-05-18"}],
            "input": [{"type": {"text": "time"}, "valueTime": "12:30:00"},
                      {"type": {"text": "year"}, "valueString": "1984"}],
            "code": {"coding": [{"system": "urn:x", "code": "down-referral"}], "text": "下转"}}
    [(code, document)] = index.index_rows(task).text
    assert code == "_content"
    words = set(document.split())
    assert {"completed", "已", "完", "成", "2024", "回", "转", "下", "down-referral", "time",
            "year", "1984"} <= words
    for left_out in ("7", "metatag", "元", "标", "签", "2026-11-26t17:08:42.418z",
                     "2024-05-17t12:49:00+08:00", "2024-05", "2024-05-18", "12:30:00"):
        assert left_out not in words, left_out
    assert not any(w.startswith(("2026", "2024-", "12:")) for w in words)


def test_content_document_of_a_resource_deeper_than_recursion_goes() -> None:
    """The document is walked recursively (validation stops written resources at 100
    levels); anything deeper still gets its document, not a RecursionError (a 500)."""
    import sys

    from santong.search.values import content_document

    item: dict[str, Any] = {"text": "最深处"}
    for _ in range(sys.getrecursionlimit() + 50):
        item = {"text": "level", "item": [item]}
    document = content_document({"resourceType": "Questionnaire", "item": [item]})
    words = document.split()
    assert words[0] == "level" and words[-3:] == ["最", "深", "处"]
    assert len(words) == sys.getrecursionlimit() + 50 + 3


def test_extractions_caches_are_bounded() -> None:
    """Custom SearchParameters posted over a process's life bring expressions, types and
    element names of their own: every cache keyed by them has a size limit."""
    import inspect

    cached = [value for value in vars(extract).values()
              if callable(value) and hasattr(value, "cache_parameters")]
    keyed = [f for f in cached if inspect.signature(f.__wrapped__).parameters]
    assert len(keyed) >= 8, [f.__name__ for f in keyed]
    assert {f.__name__: f.cache_parameters()["maxsize"] for f in keyed
            if f.cache_parameters()["maxsize"] is None} == {}
