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
    assert [i["code"] for i in rest["interaction"]] == ["history-system"]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {i["code"] for i in patient["interaction"]} == {
        "read", "vread", "update", "delete", "history-instance", "history-type", "create",
        "search-type"}
    assert [p["name"] for p in patient["searchParam"]] == ["_id", "identifier"]
    # Types without an identifier element do not claim the identifier parameter.
    binary = next(r for r in rest["resource"] if r["type"] == "Binary")
    assert [p["name"] for p in binary["searchParam"]] == ["_id"]
    assert patient["conditionalDelete"] == "single"
    # Nothing unimplemented is claimed: no batch/transaction, no operations, no XML.
    assert "operation" not in rest
    assert all("xml" not in f for f in statement["format"])
