"""Small helpers shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def patient(**extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": unique("id")}],
        "name": [{"family": "张", "given": ["三"]}],
        "gender": "male",
        "birthDate": "1970-01-01",
    }
    resource.update(extra)
    return resource


def outcome_issues(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    return body["issue"]


def expressions(response: httpx.Response) -> list[str]:
    return [e for issue in outcome_issues(response) for e in issue.get("expression", [])]


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    response = await client.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    return response
