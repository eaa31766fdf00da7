"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): lists, singletons, choice types."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from tests.helpers import create, patient

from santong.fhir.fhirpatch import apply_fhirpath_patch
from santong.fhir.outcome import FhirError


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One `operation` parameter; parts given as name=(value[x] key, value) or name=[parts]."""
    part: list[dict[str, Any]] = [{"name": "type", "valueCode": kind},
                                  {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if isinstance(value, list):
            part.append({"name": name, "part": value})
        else:
            key, item = value
            part.append({"name": name, key: item})
    return {"name": "operation", "part": part}


def params(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "http://a", "value": "1"}, {"system": "http://b", "value": "2"}],
    "name": [{"use": "official", "family": "张", "given": ["三", "四", "五"]},
             {"use": "nickname", "given": ["小三"]}],
    "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
    "birthDate": "1970-01-01",
    "deceasedBoolean": False,
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"text": "体温"},
    "valueQuantity": {"value": 37.5, "unit": "Cel"},
    "effectiveDateTime": "2024-01-01",
}


def apply(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(resource)
    result = apply_fhirpath_patch(resource, params(*operations))
    assert resource == before  # the input is never changed
    return result


def test_add_to_a_list_and_to_a_singleton() -> None:
    result = apply(
        PATIENT,
        operation("add", "Patient", name=("valueString", "identifier"),
                  value=[{"name": "system", "valueUri": "http://c"},
                         {"name": "value", "valueString": "3"}]),
        operation("add", "Patient.name.where(use = 'nickname')", name=("valueString", "given"),
                  value=("valueString", "三儿")),
        operation("add", "Patient", name=("valueString", "gender"), value=("valueCode", "male")),
        operation("add", "Patient", name=("valueString", "address"),
                  value=[{"name": "city", "valueString": "县城"},
                         {"name": "line", "valueString": "一路"}]),
    )
    assert result["identifier"][-1] == {"system": "http://c", "value": "3"}
    assert result["name"][1]["given"] == ["小三", "三儿"]
    assert result["gender"] == "male"
    # Parts become arrays where the element repeats (Patient.address, Address.line).
    assert result["address"] == [{"city": "县城", "line": ["一路"]}]


def test_add_to_a_singleton_that_has_a_value_is_refused() -> None:
    with pytest.raises(FhirError) as raised:
        apply(PATIENT, operation("add", "Patient", name=("valueString", "birthDate"),
                                 value=("valueDate", "1980-01-01")))
    assert raised.value.status == 409
    assert raised.value.issues[0].expression == "Parameters.parameter[0]"


def test_insert_delete_and_move_in_lists() -> None:
    resource = copy.deepcopy(PATIENT)
    resource["name"][0]["_given"] = [None, {"extension": [
        {"url": "http://example.org/x", "valueString": "second"}]}, None]
    result = apply(
        resource,
        operation("insert", "Patient.name[0].given", index=("valueInteger", 0),
                  value=("valueString", "零")),
        operation("move", "Patient.name[0].given", source=("valueInteger", 3),
                  destination=("valueInteger", 1)),
        operation("delete", "Patient.identifier.where(system = 'http://a')"),
    )
    assert result["name"][0]["given"] == ["零", "五", "三", "四"]
    # The primitives' extensions moved with them.
    assert result["name"][0]["_given"][3]["extension"][0]["valueString"] == "second"
    assert [g is None for g in result["name"][0]["_given"]] == [True, True, True, False]
    assert result["identifier"] == [{"system": "http://b", "value": "2"}]
    emptied = apply(result, operation("delete", "Patient.identifier[0]"))
    assert "identifier" not in emptied  # no empty arrays are left behind


def test_replace_in_lists_and_singletons() -> None:
    result = apply(
        PATIENT,
        operation("replace", "Patient.name.where(use = 'official').given[1]",
                  value=("valueString", "肆")),
        operation("replace", "Patient.birthDate", value=("valueDate", "1971-02-03")),
        operation("replace", "Patient.name.first().family", value=("valueString", "李")),
    )
    assert result["name"][0]["given"] == ["三", "肆", "五"]
    assert result["name"][0]["family"] == "李"
    assert result["birthDate"] == "1971-02-03"
    assert result["_birthDate"] == PATIENT["_birthDate"]


def test_delete_of_nothing_is_not_an_error() -> None:
    result = apply(PATIENT, operation("delete", "Patient.telecom"),
                   operation("delete", "Patient.birthDate"))
    assert "telecom" not in result
    assert "birthDate" not in result and "_birthDate" not in result


def test_choice_types() -> None:
    # Observation.value finds valueQuantity; a value of another type changes the variant.
    replaced = apply(OBSERVATION, operation("replace", "Observation.value",
                                            value=("valueString", "正常")))
    assert replaced["valueString"] == "正常" and "valueQuantity" not in replaced
    nested = apply(OBSERVATION, operation("replace", "Observation.value.ofType(Quantity).value",
                                          value=("valueDecimal", 38.1)))
    assert nested["valueQuantity"] == {"value": 38.1, "unit": "Cel"}
    deleted = apply(OBSERVATION, operation("delete", "Observation.effective"))
    assert "effectiveDateTime" not in deleted
    added = apply(deleted, operation("add", "Observation", name=("valueString", "effective"),
                                     value=("valuePeriod", {"start": "2024-02-01"})))
    assert added["effectivePeriod"] == {"start": "2024-02-01"}
    assert apply(OBSERVATION, operation("delete", "Observation.value.ofType(string)")) == \
        OBSERVATION  # the Quantity is not a string: nothing matched
    with pytest.raises(FhirError) as twice:
        apply(OBSERVATION, operation("add", "Observation", name=("valueString", "value"),
                                     value=("valueString", "x")))
    assert twice.value.status == 409  # value[x] already has a (Quantity) value
    with pytest.raises(FhirError) as wrong_type:
        apply(OBSERVATION, operation("replace", "Observation.value",
                                     value=("valueAddress", {"city": "x"})))
    assert wrong_type.value.status == 400


@pytest.mark.parametrize(("operations", "status"), [
    ([operation("replace", "Patient.name.given", value=("valueString", "x"))], 409),
    ([operation("replace", "Patient.telecom", value=("valueString", "x"))], 409),
    ([operation("delete", "Patient.name")], 409),
    ([operation("insert", "Patient.identifier", index=("valueInteger", 5),
                value=[{"name": "value", "valueString": "x"}])], 409),
    ([operation("move", "Patient.name", source=("valueInteger", 0),
                destination=("valueInteger", 2))], 409),
    ([operation("frobnicate", "Patient.name")], 400),
    ([operation("insert", "Patient.identifier", value=("valueString", "x"))], 400),
    ([operation("add", "Patient", name=("valueString", "colour"),
                value=("valueString", "x"))], 400),
    ([operation("replace", "Patient.name.where(", value=("valueString", "x"))], 400),
    ([{"name": "op", "part": []}], 400),
    ([], 400),
])
def test_errors(operations: list[dict[str, Any]], status: int) -> None:
    with pytest.raises(FhirError) as raised:
        apply_fhirpath_patch(PATIENT, params(*operations))
    assert raised.value.status == status


async def test_fhirpath_patch_over_http(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    response = await client.patch(url, json=params(
        operation("add", "Patient", name=("valueString", "deceased"),
                  value=("valueDateTime", "2020-01-01")),
        operation("insert", "Patient.name[0].given", index=("valueInteger", 0),
                  value=("valueString", "大"))),
        headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    assert response.json()["deceasedDateTime"] == "2020-01-01"
    assert response.json()["name"][0]["given"] == ["大", "三"]
    # The result must be valid: a required element may not be deleted.
    obs = {k: v for k, v in OBSERVATION.items() if k != "id"}
    obs_url = f"Observation/{(await create(client, obs)).json()['id']}"
    required = await client.patch(obs_url, json=params(operation("delete", "Observation.status")))
    assert required.status_code == 422, required.text
    assert (await client.get(obs_url)).json()["status"] == "final"
    invalid = await client.patch(url, json=params(operation(
        "replace", "Patient.birthDate", value=("valueString", "someday"))))
    assert invalid.status_code == 400
    bad_parameters = await client.patch(url, json={"resourceType": "Parameters",
                                                   "parameter": [{"name": 1}]})
    assert bad_parameters.status_code == 400
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"
