"""Writing versions: the server's `id` and `meta` on the client's resource, then the row.

http://hl7.org/fhir/R4/resource.html#Meta — `versionId` and `lastUpdated` are the server's;
everything else the client sent (profile, tag, security, source, all other elements) is kept
as written, in the client's order.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from santong.fhir import jsonio
from santong.fhir.outcome import error
from santong.fhir.versioning import instant, now
from santong.search import registry as search_parameters
from santong.search.index import index_rows
from santong.storage.repository import StoredVersion, Transaction
from santong.workflow import after_delete, after_write, check_write


def new_id() -> str:
    return str(uuid.uuid4())


def serialise_version(
    resource: dict[str, Any], id: str, version_id: int, last_updated: datetime
) -> tuple[dict[str, Any], str]:
    """The resource as stored (with the server's id and meta), as a dict and as JSON text."""
    client_meta = resource.get("meta") or {}
    meta = {"versionId": str(version_id), "lastUpdated": instant(last_updated)}
    meta.update((k, v) for k, v in client_meta.items() if k not in meta)
    stored: dict[str, Any] = {"resourceType": resource["resourceType"], "id": id, "meta": meta}
    stored.update((k, v) for k, v in resource.items() if k not in stored)
    content = jsonio.dumps(stored).decode()
    if "\\u0000" in content:
        # PostgreSQL's JSON types cannot hold NUL, and no FHIR string needs one.
        raise error(400, "value", "The resource contains a NUL character (\\u0000)")
    return stored, content


async def create_version_1(
    tx: Transaction, resource: dict[str, Any], id: str, method: str, *, fresh: bool = False
) -> StoredVersion | None:
    """Store a new resource under `id`; None when that id already exists.

    `fresh`: the server drew `id` (a uuid4), so no one else holds it and the write can wait
    for the transaction's next flush, batched with the others.
    """
    resource_type = resource["resourceType"]
    check_write(resource_type, None, resource, method)  # workflow rules (santong.workflow)
    if resource_type == "SearchParameter":
        search_parameters.check(resource)
        await search_parameters.announce(tx.connection)
    moment = now()
    stored, content = serialise_version(resource, id, 1, moment)
    await after_write(tx, stored, None, method)  # what it sets off (santong.workflow)
    if fresh:
        tx.queue_first_version(resource_type, id, moment, content, method, index_rows(stored))
        return StoredVersion(resource_type, id, 1, moment, False, content, method)
    rid = await tx.insert_first_version(resource_type, id, moment, content, method)
    if rid is None:
        return None
    tx.queue_index(rid, resource_type, index_rows(stored))
    return StoredVersion(resource_type, id, 1, moment, False, content, method, rid=rid)


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what the server sets on every version (meta.versionId and
    meta.lastUpdated)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    compared = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        compared["meta"] = meta
    return compared


def _number_text(value: Any) -> str | None:
    """How a JSON number is written (None for anything else): FHIR decimals keep their
    precision, so 1.5, 1.50 and 1.5e0 differ although Python finds them equal."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, jsonio.PreciseDecimal):
        return value.text
    # As written back (orjson: `1.5e-7`, where repr gives `1.5e-07`).
    return repr(value) if isinstance(value, int) else jsonio.dumps(value).decode()


def _same(a: Any, b: Any) -> bool:
    """JSON equality as FHIR sees it: object keys in any order, arrays in order, numbers by
    their text, `true` never equal to 1."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    numbers = _number_text(a), _number_text(b)
    if numbers != (None, None):
        return numbers[0] == numbers[1]
    return type(a) is type(b) and a == b


async def write_next(
    tx: Transaction, current: StoredVersion, resource: dict[str, Any] | None, method: str
) -> StoredVersion:
    """Store the version after `current` (locked FOR UPDATE); `resource` None deletes.

    An update that changes nothing writes nothing and answers `current`, as HAPI FHIR and
    Medplum do: re-sending a record (a re-run load, an EHR's periodic sync) makes no versions.
    """
    # The live version as stored (None when there is none: a re-created resource starts
    # afresh), read once for the no-op check and the workflow rules.
    before = (None if resource is None or current.deleted or not current.content
              else jsonio.loads(current.content))
    if before is not None and _same(_comparable(before),
                                    _comparable({**resource, "id": current.id})):
        return current
    version_id = current.version_id + 1
    previous = None
    if resource is not None and current.resource_type == "Task":
        previous = before  # workflow rules (santong.workflow)
        check_write(current.resource_type, previous, resource, method)
    if current.resource_type == "SearchParameter":
        if resource is not None:
            search_parameters.check(resource)
        await search_parameters.announce(tx.connection)
    # lastUpdated never goes backwards within a resource, whatever the clocks of other hosts.
    moment = max(now(), current.last_updated)
    stored, content = (
        (None, None) if resource is None
        else serialise_version(resource, current.id, version_id, moment)
    )
    if stored is not None:  # what it sets off (santong.workflow), in this transaction
        await after_write(tx, stored, previous, method, first=current.deleted)
    else:
        await after_delete(tx, current.resource_type, current.id)
    rid = await tx.write_next_version(
        current.resource_type, current.id, version_id, moment, content, method
    )
    tx.queue_index(rid, current.resource_type, None if stored is None else index_rows(stored))
    return StoredVersion(
        current.resource_type, current.id, version_id, moment, content is None, content, method,
        rid=rid,
    )
