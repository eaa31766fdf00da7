"""Turning the values a SearchParameter selects into index rows, by parameter type.

http://hl7.org/fhir/R4/search.html#string, #token, #reference, #date, #number, #quantity, #uri.
The same normalisation serves indexing and querying, so both sides agree by construction.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from santong.fhir.datetimes import parse_range
from santong.fhir.jsonio import PreciseDecimal
from santong.search import ucum

# CJK ideographs, kana and hangul: scripts written without spaces between words.
_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHARS}]")
_CJK_RUN = re.compile(f"[{_CJK_CHARS}]+")
_REFERENCE = re.compile(
    r"^(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def normalise(text: str) -> str:
    """Case- and accent-insensitive form (search.html#string): NFKD, marks dropped, casefolded."""
    if not text.isascii():
        # NFKD also folds full-width forms (Ａ, １) common in Chinese text to ASCII.
        text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return " ".join(text.casefold().split())  # str.split() and re's \s: the same whitespace


def text_document(text: str) -> str:
    """Text for PostgreSQL full-text search, with each CJK character a word of its own."""
    # One replacement per run of characters, not per character: this runs on every write.
    return _CJK_RUN.sub(_spaced, normalise(text))


def _spaced(run: re.Match[str]) -> str:
    return f" {' '.join(run.group())} "


def string_values(node_type: str, value: Any) -> Iterator[str]:
    """The strings a string parameter matches in a value of `node_type`."""
    if isinstance(value, str):
        yield value
    elif node_type == "HumanName" and isinstance(value, dict):
        family = value.get("family")
        given = [g for g in value.get("given", []) if isinstance(g, str)]
        for part in (family, *given, *value.get("prefix", []), *value.get("suffix", []),
                     value.get("text")):
            if isinstance(part, str):
                yield part
        # Chinese names are written family name first with no space: 张 + 三 → 张三.
        if isinstance(family, str) and given and _CJK.search(family):
            yield family + "".join(given)
    elif node_type == "Address" and isinstance(value, dict):
        for key in ("line", "city", "district", "state", "postalCode", "country", "text"):
            part = value.get(key)
            for item in part if isinstance(part, list) else [part]:
                if isinstance(item, str):
                    yield item
    elif isinstance(value, dict):
        yield from string_leaves(value)


_NOT_TEXT = frozenset({"resourceType", "id", "url", "system", "reference", "div"})


# A date, dateTime, instant or time as FHIR writes them (at least to the month, or a time
# of day): the document of _content leaves them out. Their pieces (`2024`, `-05`, `t12`,
# `+08`) are the commonest words of any resource, match nothing a reader means by a word and
# were a third of a typical document's index entries. A bare year is kept (it may be a code).
_DATE_OR_TIME = re.compile(
    r"-?\d{4}-\d{2}(?:-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?"
    r"|\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
)


def content_document(resource: dict[str, Any]) -> str:
    """The document of `_content` (search.html#content), as `text_document` makes one: the
    resource's text and codes, without its meta (version, lastUpdated, profiles: about the
    record, not its content) and without dates and times. Identifiers, URLs and narrative
    are left out as by string_leaves."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    words: list[str] = []
    try:
        _content_words(body, words)
    except RecursionError:  # deeper than validation lets through (100 levels)
        words = [_leaf_document(s) for s in string_leaves(body)
                 if s[:1] not in _DATE_START or not _DATE_OR_TIME.fullmatch(s)]
    return " ".join(words)


# The first characters of a date or time (_DATE_OR_TIME): other strings skip the regex.
_DATE_START = frozenset("-0123456789")


def _content_words(value: dict[str, Any], words: list[str]) -> None:
    """`_leaf_document` of each of string_leaves(value) but dates and times, into `words`.
    Recursive, unlike string_leaves: half the time of its stack, and a written
    resource is at most 100 levels deep (validation)."""
    for key, item in value.items():
        if key in _NOT_TEXT:
            continue
        kind = type(item)
        if kind is str:
            if item[:1] not in _DATE_START or not _DATE_OR_TIME.fullmatch(item):
                words.append(_leaf_document(item))
        elif kind is dict:
            _content_words(item, words)
        elif kind is list:
            for element in item:
                if type(element) is str:
                    if element[:1] not in _DATE_START or not _DATE_OR_TIME.fullmatch(element):
                        words.append(_leaf_document(element))
                elif type(element) is dict:
                    _content_words(element, words)
                elif type(element) is list:  # not FHIR, but JSON: as string_leaves
                    _content_words({"": element}, words)


@lru_cache(maxsize=16384)
def _cached_document(text: str) -> str:
    return text_document(text)


def _leaf_document(text: str) -> str:
    """text_document of one string, remembered when short: most are codes, displays and
    names that recur across resources (each written resource's document took a tenth of
    its indexing)."""
    return _cached_document(text) if len(text) <= 64 else text_document(text)


def string_leaves(value: Any) -> list[str]:
    """Every string in `value` but identifiers, URLs and narrative, in document order."""
    out: list[str] = []
    # A stack, not recursion (the depth is the client's): this runs over every written
    # resource. Children go on it reversed, so they come off in document order.
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            out.append(item)
        elif kind is dict:
            stack.extend(reversed([v for k, v in item.items() if k not in _NOT_TEXT]))
        elif kind is list:
            stack.extend(reversed(item))
    return out


Token = tuple[str | None, str | None, str | None, str | None, str | None]


def token_values(node_type: str, value: Any) -> Iterator[Token]:
    """(system, code, text, type_system, type_code) rows for a token parameter."""
    if isinstance(value, bool):
        yield None, "true" if value else "false", None, None, None
    elif isinstance(value, str):
        yield None, value, None, None, None
    elif not isinstance(value, dict):
        return
    elif node_type == "Coding" or ("code" in value and "coding" not in value
                                   and node_type not in ("Identifier", "ContactPoint")):
        display = value.get("display")
        yield value.get("system"), value.get("code"), _norm(display), None, None
    elif node_type == "CodeableConcept" or "coding" in value:
        text = _norm(value.get("text"))
        displays = set()
        for coding in value.get("coding", []):
            if isinstance(coding, dict):
                display = _norm(coding.get("display"))
                displays.add(display)
                yield coding.get("system"), coding.get("code"), display, None, None
        if text and text not in displays:  # a coding's row already carries that text
            yield None, None, text, None, None
    elif node_type == "Identifier":
        type_ = value.get("type") or {}
        text = _norm(type_.get("text"))
        codings = [c for c in type_.get("coding", []) if isinstance(c, dict)] or [{}]
        for coding in codings:
            yield (value.get("system"), value.get("value"), text or _norm(coding.get("display")),
                   coding.get("system"), coding.get("code"))
    elif node_type == "ContactPoint":
        yield None, value.get("value"), None, None, None
    elif "value" in value:
        yield value.get("system"), str(value.get("value")), None, None, None


def _norm(text: Any) -> str | None:
    return normalise(text) if isinstance(text, str) else None


Reference = tuple[str | None, str | None, str | None, str | None, str | None]


@lru_cache(maxsize=16384)
def parse_reference(reference: str) -> tuple[str | None, str | None, str | None]:
    """(type, id, absolute url) of a reference string; contained (#x) references give Nones.
    Remembered: a Bundle's entries point at the same few patients and encounters (parsing
    them again was about 6 % of indexing the benchmark's Bundle resources)."""
    if reference.startswith("#"):
        return None, None, None
    match = _REFERENCE.match(reference)
    if match is None:
        return None, None, reference
    url = reference.split("/_history/")[0] if match.group("base") else None
    return match.group("type"), match.group("id"), url


def reference_values(node_type: str, value: Any) -> Iterator[Reference]:
    """(target_type, target_id, url, identifier_system, identifier_value) rows."""
    if isinstance(value, str):  # canonical or uri
        target_type, target_id, url = parse_reference(value.split("|")[0])
        yield target_type, target_id, url or (value.split("|")[0] if not target_id else None), \
            None, None
        return
    if not isinstance(value, dict):
        return
    identifier = value.get("identifier") or {}
    reference = value.get("reference")
    target_type = target_id = url = None
    if isinstance(reference, str):
        target_type, target_id, url = parse_reference(reference)
    if target_type is None and isinstance(value.get("type"), str) and target_id:
        target_type = value["type"]
    if target_id or url or identifier:
        yield (target_type, target_id, url, identifier.get("system"), identifier.get("value"))


def date_values(node_type: str, value: Any) -> Iterator[tuple[datetime, datetime]]:
    """[low, high) ranges of a date parameter's value (date, dateTime, instant, Period, Timing)."""
    if isinstance(value, str):
        yield from _range(value)
    elif isinstance(value, dict):
        if node_type == "Period" or "start" in value or "end" in value:
            start = next(_range(value.get("start")), None)
            end = next(_range(value.get("end")), None)
            yield (start[0] if start else DATE_MIN), (end[1] if end else DATE_MAX)
        elif node_type == "Timing" or "event" in value or "repeat" in value:
            for event in value.get("event", []):
                yield from _range(event)
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if isinstance(bounds, dict):
                yield from date_values("Period", bounds)


def _range(value: Any) -> Iterator[tuple[datetime, datetime]]:
    if isinstance(value, str):
        try:
            yield parse_range(value)
        except (ValueError, OverflowError):
            return


# Open ends of periods: finite stand-ins that every real date sorts between.
DATE_MIN = datetime(1, 1, 2, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 30, tzinfo=UTC)


def decimal_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, PreciseDecimal):
        return value.text
    if isinstance(value, int | float):
        return repr(value)
    return None


def precision_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """A decimal and the range its written precision implies: 100 → [99.5, 100.5)."""
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return value, value - half, value + half


def number_values(node_type: str, value: Any) -> Iterator[tuple[Decimal, Decimal, Decimal]]:
    text = decimal_text(value)
    if text is not None:
        try:
            yield precision_range(text)
        except (InvalidOperation, ValueError):
            return


def position_values(value: Any) -> Iterator[tuple[float, float]]:
    """(latitude, longitude) of a Location.position (WGS84 degrees), when both are in range."""
    if not isinstance(value, dict):
        return
    latitude, longitude = decimal_text(value.get("latitude")), decimal_text(value.get("longitude"))
    if latitude is None or longitude is None:
        return
    lat, lon = float(latitude), float(longitude)
    if -90 <= lat <= 90 and -180 <= lon <= 180:
        yield lat, lon


QuantityRow = tuple[str | None, str | None, Decimal, Decimal, Decimal, str | None,
                    Decimal | None]


def canonical_quantity(system: str | None, unit: str | None, number: Decimal
                       ) -> tuple[str | None, Decimal | None]:
    """(canonical unit, value in it) for a UCUM quantity; (None, None) otherwise."""
    if system != ucum.UCUM or not unit:
        return None, None
    found = ucum.canonical(unit)
    if found is None:
        return None, None
    factor, canonical_unit = found
    return canonical_unit, number * factor


def quantity_values(node_type: str, value: Any) -> Iterator[QuantityRow]:
    """(system, unit, value, low, high, canonical unit, canonical value) of a Quantity (also
    Age, Duration, Money, …)."""
    if not isinstance(value, dict):
        return
    text = decimal_text(value.get("value"))
    if text is None:
        return
    try:
        number, low, high = precision_range(text)
    except (InvalidOperation, ValueError):
        return
    if node_type == "Money" or "currency" in value:
        yield "urn:iso:std:iso:4217", value.get("currency"), number, low, high, None, None
        return
    unit = value.get("code") or value.get("unit")
    system = value.get("system")
    yield system, unit, number, low, high, *canonical_quantity(system, value.get("code"), number)
    if value.get("code") and value.get("unit") and value["unit"] != value["code"]:
        yield system, value["unit"], number, low, high, None, None


def uri_values(node_type: str, value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
