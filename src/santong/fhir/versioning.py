"""Version headers: ETag, Last-Modified, If-Match, If-None-Match, If-Modified-Since.

http://hl7.org/fhir/R4/http.html#versioning and http://hl7.org/fhir/R4/http.html#cread
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache

from santong.fhir.outcome import error
from santong.storage.repository import StoredVersion

_ETAG = re.compile(r'^\s*(?:W/)?"?([^"\s]*)"?\s*$')


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str, header: str) -> str:
    """The version id inside an ETag (`W/"3"`, `"3"` or `3`)."""
    match = _ETAG.match(value)
    if match is None or not match.group(1):
        raise error(400, "invalid", f"Malformed {header} header: {value!r}", expression=header)
    return match.group(1)


# A transaction's writes, and a busy second's responses, share their moments: formatted once.
@lru_cache(maxsize=256)
def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@lru_cache(maxsize=256)
def instant(moment: datetime) -> str:
    """A FHIR instant with millisecond precision in UTC."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> datetime:
    """The server clock, truncated to what `instant` writes so meta and the database agree."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def version_headers(stored: StoredVersion) -> dict[str, str]:
    return {"ETag": etag(stored.version_id), "Last-Modified": http_date(stored.last_updated)}


def check_if_match(header: str | None, current: StoredVersion | None) -> None:
    """412 unless the resource exists at the version named by If-Match."""
    if header is None:
        return
    wanted = parse_etag(header, "If-Match")
    if current is None or current.deleted:
        raise error(412, "conflict", "If-Match given but the resource does not exist")
    if wanted != str(current.version_id):
        raise error(
            412,
            "conflict",
            f"Version conflict: If-Match asks for version {wanted}, "
            f"the current version is {current.version_id}",
        )


def not_modified(
    if_none_match: str | None, if_modified_since: str | None, stored: StoredVersion
) -> bool:
    """Whether a conditional read may answer 304 Not Modified (RFC 9110 §13.2.2 order)."""
    if if_none_match is not None:
        for tag in if_none_match.split(","):
            if tag.strip() == "*":
                return True
            match = _ETAG.match(tag)
            if match is not None and match.group(1) == str(stored.version_id):
                return True
        return False
    if if_modified_since is not None:
        since = parse_http_date(if_modified_since)
        # HTTP dates have whole seconds: compare at that precision.
        if since is not None:
            return stored.last_updated.replace(microsecond=0) <= since
    return False
