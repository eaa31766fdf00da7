"""Content types: `_format`, `Accept`, `Content-Type` and `_pretty`.

http://hl7.org/fhir/R4/http.html#mime-type — Santong speaks JSON only; a request for any other
format gets 406, a body in any other format 415.
"""

from __future__ import annotations

from santong.fhir.outcome import error
from santong.fhir.request import FhirRequest

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
# What a client may ask for and still get FHIR JSON (application/json+fhir is the DSTU2 name).
_JSON_TYPES = {FHIR_JSON, JSON, "application/json+fhir", "text/json", "json"}
_WILDCARDS = {"*/*", "application/*"}


def _media_types(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        media, *options = (p.strip() for p in part.split(";"))
        quality = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((media.lower(), quality))
    return ranges


def response_media_type(request: FhirRequest) -> str:
    """The media type to answer with, or a 406 FhirError if the client wants none we produce."""
    requested = request.param("_format")
    if requested is not None:
        media = requested.split(";")[0].strip().lower()
        if media in _JSON_TYPES:
            return JSON if media == JSON else FHIR_JSON
        raise error(
            406, "not-supported", f"_format {requested!r} is not supported: only JSON is",
            expression="_format",
        )
    accept = request.header("accept")
    if not accept:
        return FHIR_JSON
    acceptable = [m for m, q in _media_types(accept) if q > 0]
    if any(m == FHIR_JSON or m == "application/json+fhir" for m in acceptable):
        return FHIR_JSON
    if JSON in acceptable or "text/json" in acceptable:
        return JSON
    if any(m in _WILDCARDS for m in acceptable):
        return FHIR_JSON
    raise error(406, "not-supported", f"Cannot produce {accept!r}: this server produces "
                f"{FHIR_JSON} and {JSON} only")


def check_body_media_type(request: FhirRequest, *, allowed: set[str] | None = None) -> None:
    content_type = request.header("content-type")
    if not content_type:
        return
    media = content_type.split(";")[0].strip().lower()
    if media not in (allowed or _JSON_TYPES):
        raise error(415, "not-supported", f"Unsupported Content-Type {content_type!r}: "
                    f"send {FHIR_JSON}")


def wants_pretty(request: FhirRequest) -> bool:
    return (request.param("_pretty") or "").lower() == "true"
