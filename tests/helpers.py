"""Small helpers shared by the tests."""

from __future__ import annotations

import functools
import os
import tarfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from santong.storage.database import asyncpg_connect_args

FHIR_JSON = "application/fhir+json"
ROOT = Path(__file__).resolve().parent.parent
# The official R4 package (CC0) from the npm registry, fetched over HTTPS: no npm needed.
R4_PACKAGE_URL = ("https://registry.npmjs.org/hl7.fhir.r4.examples/-/"
                  "hl7.fhir.r4.examples-4.0.1.tgz")


@functools.cache
def r4_base() -> Path:
    """The unpacked official R4 package (definitions and examples): $SANTONG_R4_PACKAGE or
    /tmp/r4pkg/package when present, otherwise downloaded once into .cache/ (without network
    the tests that need it fail rather than skip)."""
    given = Path(os.environ.get("SANTONG_R4_PACKAGE", "/tmp/r4pkg/package"))
    if (given / "StructureDefinition-Patient.json").is_file():
        return given
    cache = ROOT / ".cache" / "r4"
    unpacked = cache / "package"
    if not (unpacked / "StructureDefinition-Patient.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        packed = cache / "hl7.fhir.r4.examples-4.0.1.tgz"
        urllib.request.urlretrieve(R4_PACKAGE_URL, packed)
        with tarfile.open(packed) as archive:
            archive.extractall(cache, filter="data")
        packed.unlink()
    return unpacked


async def admin(url: str, *statements: str) -> None:
    """Run statements (CREATE/DROP DATABASE, set-up SQL) one after another on the server at
    `url`, on a connection of their own, outside transactions."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


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
