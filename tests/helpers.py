"""Small helpers shared by the tests."""

from __future__ import annotations

import functools
import os
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"
ROOT = Path(__file__).resolve().parent.parent
R4_PACKAGE = "hl7.fhir.r4.examples@4.0.1"


@functools.cache
def r4_base() -> Path:
    """The unpacked official R4 package (definitions and examples): $SANTONG_R4_PACKAGE or
    /tmp/r4pkg/package when present, otherwise fetched once with `npm pack` into .cache/ (CI
    has npm; without it the tests that need the package fail rather than skip)."""
    given = Path(os.environ.get("SANTONG_R4_PACKAGE", "/tmp/r4pkg/package"))
    if (given / "StructureDefinition-Patient.json").is_file():
        return given
    cache = ROOT / ".cache" / "r4"
    unpacked = cache / "package"
    if not (unpacked / "StructureDefinition-Patient.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(["npm", "pack", R4_PACKAGE, "--silent"], cwd=cache, check=True,
                                capture_output=True, text=True).stdout.split()[-1]
        with tarfile.open(cache / packed) as archive:
            archive.extractall(cache, filter="data")
        (cache / packed).unlink()
    return unpacked


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
