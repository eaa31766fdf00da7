"""GET /metadata: a valid CapabilityStatement that claims exactly what is implemented."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from santong import definitions
from santong.validation import validate_resource


async def test_capability_statement(client: httpx.AsyncClient) -> None:
    response = await client.get("metadata")
    assert response.status_code == 200
    statement = response.json()
    assert validate_resource(statement, "CapabilityStatement") == []
    CapabilityStatement.model_validate(statement)  # an independent model agrees it is valid
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    rest = statement["rest"][0]
    assert {r["type"] for r in rest["resource"]} == set(definitions.RESOURCE_TYPES)
    assert {i["code"] for i in rest["interaction"]} == {
        "history-system", "search-system", "transaction", "batch"}
    assert statement["patchFormat"] == ["application/json-patch+json", "application/fhir+json"]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {i["code"] for i in patient["interaction"]} >= {
        "read", "vread", "update", "delete", "history-instance", "history-type", "create",
        "search-type", "patch"}
    params = {p["name"]: p["type"] for p in patient["searchParam"]}
    assert params["name"] == "string" and params["birthdate"] == "date"
    assert params["identifier"] == "token" and params["general-practitioner"] == "reference"
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_text", "_content"} <= set(
        params)
    # Only what the compiler answers is claimed: of the special parameters, near, not _filter.
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    observation_params = {p["name"]: p["type"] for p in observation["searchParam"]}
    assert observation_params["value-quantity"] == "quantity"
    assert observation_params["code-value-quantity"] == "composite"
    location = next(r for r in rest["resource"] if r["type"] == "Location")
    location_params = {p["name"]: p["type"] for p in location["searchParam"]}
    assert location_params["near"] == "special" and "_filter" not in location_params
    assert patient["conditionalDelete"] == "single"
    # Operations: $validate and $reindex everywhere, the terminology ones on their types.
    assert {o["name"] for o in patient["operation"]} == {"validate", "reindex", "everything"}
    value_set = next(r for r in rest["resource"] if r["type"] == "ValueSet")
    assert {o["name"] for o in value_set["operation"]} == {
        "validate", "reindex", "expand", "validate-code"}
    assert [o["name"] for o in rest["operation"]] == ["reindex"]
    # Nothing unimplemented is claimed: no XML.
    assert all("xml" not in f for f in statement["format"])
