"""Search criteria given as a query string: an If-None-Exist header or a conditional URL."""

from __future__ import annotations

from urllib.parse import parse_qsl

from santong.fhir.outcome import error


def parse_conditional(query: str) -> list[tuple[str, str]]:
    """The parameters of `[type]?a=b`, `?a=b` or `a=b` (http://hl7.org/fhir/R4/http.html#ccreate)."""
    query = query.split("?", 1)[1] if "?" in query else query
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise error(400, "invalid", f"Malformed search criteria {query!r}") from None
