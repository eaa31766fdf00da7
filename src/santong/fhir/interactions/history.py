"""history — http://hl7.org/fhir/R4/http.html#history.

GET [base]/[type]/[id]/_history, [base]/[type]/_history and [base]/_history: a `history`
Bundle, newest version first, with `_count`, `_since` (versions at or after an instant) and
`_at` (versions current at some point in a time range). Pages are cut by a keyset cursor
(`_cursor`), so a `next` link stays valid however much is written meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from santong.fhir.bundles import bundle, link, resource_fragment
from santong.fhir.call import Call
from santong.fhir.datetimes import parse_range
from santong.fhir.outcome import error
from santong.fhir.request import FhirResponse
from santong.fhir.versioning import etag, instant
from santong.storage.repository import HistoryQuery, StoredVersion

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def page_size(call: Call, value: str | None = None) -> int:
    """`_count`, within the server's limit (from the query unless given)."""
    value = value if value is not None else call.request.param("_count")
    if value is None:
        return call.settings.default_page_size
    if not value.isdigit():
        raise error(400, "invalid", f"_count must be a non-negative integer, not {value!r}",
                    expression="_count")
    return min(int(value), call.settings.max_page_size)


def _encode_cursor(version: StoredVersion) -> str:
    return f"{(version.last_updated - _EPOCH) // timedelta(microseconds=1)}.{version.seq}"


def _decode_cursor(value: str) -> tuple[datetime, int]:
    micros, _, seq = value.partition(".")
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), int(seq)
    except (ValueError, OverflowError):
        raise error(400, "invalid", f"Malformed _cursor {value!r}", expression="_cursor") from None


def _time_param(call: Call, name: str) -> tuple[datetime, datetime] | None:
    value = call.request.param(name)
    if value is None:
        return None
    try:
        return parse_range(value)
    except ValueError as exc:
        raise error(400, "invalid", f"{name}: {exc}", expression=name) from None


def _entry(call: Call, version: StoredVersion) -> dict[str, Any]:
    url = f"{version.resource_type}/{version.id}"
    entry: dict[str, Any] = {"fullUrl": f"{call.request.base_url}/{url}"}
    if version.content is not None:
        entry["resource"] = resource_fragment(version.content)
    entry["request"] = {
        "method": version.method,
        "url": version.resource_type if version.method == "POST" else url,
    }
    status = "201 Created" if version.version_id == 1 else _STATUS.get(version.method, "200 OK")
    entry["response"] = {
        "status": status,
        "etag": etag(version.version_id),
        "lastModified": instant(version.last_updated),
    }
    return entry


async def history(call: Call) -> FhirResponse:
    if call.id is not None and await call.tx.read_current(call.type, call.id) is None:
        raise error(404, "not-found", f"Resource {call.type}/{call.id} is not known")
    count = page_size(call)
    since = _time_param(call, "_since")
    at = _time_param(call, "_at")
    cursor = call.request.param("_cursor")
    query = HistoryQuery(
        resource_type=call.resource_type,
        id=call.id,
        since=since[0] if since else None,
        at_start=at[0] if at else None,
        at_end=at[1] if at else None,
        before=_decode_cursor(cursor) if cursor else None,
        limit=count + 1,
    )
    versions = await call.tx.history(query)
    page, more = versions[:count], len(versions) > count
    kept = [(k, v) for k, v in call.request.query
            if k in ("_count", "_since", "_at", "_format", "_pretty")]
    links = [("self", link(call.request, call.request.query)), ("first", link(call.request, kept))]
    if more and page:
        links.append(("next", link(call.request, [*kept, ("_cursor", _encode_cursor(page[-1]))])))
    entries = [_entry(call, v) for v in page]
    return FhirResponse(200, resource=bundle("history", links, entries))
