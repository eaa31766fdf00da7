"""Compiling FHIR search parameters into SQL conditions over a `resource` row.

http://hl7.org/fhir/R4/search.html. Each parameter becomes an `EXISTS` over its type's index
table (see `santong.search.index`), correlated on the resource's `rid`; comma-separated values
are ORed inside one `EXISTS`, repeated parameters ANDed. Chains and `_has` recurse into the
referenced or referring resources with the same compiler, so they nest to any depth.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import InvalidOperation
from typing import Any

from santong import definitions
from santong.fhir.datetimes import EARLIEST, LATEST, parse_range
from santong.fhir.outcome import FhirError, error
from santong.search import transforms, ucum, values
from santong.search.extract import ExtractionError, extract
from santong.search.index import TABLES, span_bucket
from santong.search.parameters import SearchParameter, by_url, get

# Parameters that shape the result rather than select resources.
RESULT_PARAMETERS = frozenset({
    "_count", "_summary", "_elements", "_format", "_pretty", "_cursor", "_total", "_sort",
    "_include", "_revinclude", "_include:iterate", "_revinclude:iterate", "_contained",
    "_containedType", "_explain",
})
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_TABLE = {
    "string": "search_string", "token": "search_token", "reference": "search_reference",
    "date": "search_date", "number": "search_number", "quantity": "search_quantity",
    "uri": "search_uri",
}


class UnknownParameter(Exception):
    """A parameter this server does not know (ignored or rejected per Prefer: handling)."""


@dataclass
class Compiled:
    """SQL conditions over the row alias `r`, their binds, and what was applied or ignored."""

    where: list[str] = field(default_factory=list)
    binds: dict[str, Any] = field(default_factory=dict)
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def conditions(self) -> list[tuple[str, dict[str, Any]]]:
        """The shape `Transaction.search_current` takes."""
        if not self.where:
            return []
        return [(" AND ".join(f"({w})" for w in self.where), self.binds)]


def split_values(value: str) -> list[str]:
    """Comma-separated alternatives; `\\,` is a literal comma (search.html#escaping)."""
    result, current, chars = [], [], iter(value)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ",":
            result.append("".join(current))
            current = []
        else:
            current.append(char)
    result.append("".join(current))
    return result


def split_token(value: str) -> tuple[str | None, str | None]:
    """`system|code` → (system, code); `code` → (None, code); `|code` → ("", code)."""
    escaped = value.replace("\\|", "\x00")
    if "|" not in escaped:
        return None, value.replace("\\|", "|")
    system, _, code = escaped.partition("|")
    return system.replace("\x00", "|"), code.replace("\x00", "|")


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _successor(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` in code point (and so
    UTF-8 byte) order: its last character, incremented. None when there is none."""
    for cut in range(len(prefix), 0, -1):
        point = ord(prefix[cut - 1]) + 1
        if 0xD800 <= point <= 0xDFFF:  # surrogates are not characters
            point = 0xE000
        if point <= 0x10FFFF:
            return prefix[:cut - 1] + chr(point)
    return None


def _split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def opaque(value: str, sql_type: str) -> str:
    """`value` (a bound array) read through a one-row InitPlan, which the planner cannot see
    into.

    PostgreSQL plans a prepared statement for its values for five runs, then keeps its generic
    plan only if that is estimated no dearer. For a page's rids or a few ids it estimates the
    actual array (often one to four elements) below the generic plan's ten, so it planned such
    statements at every run for ever: 0.2-0.4 ms each time, more than running them, for the
    same plan (`_include`, `_revinclude`, `_id`). Hidden, the array is estimated alike both
    ways and the generic plan is kept. Only for arrays whose length does not change the plan.
    """
    return f"CAST((SELECT CAST({value} AS {sql_type})) AS {sql_type})"


def _instant(moment: datetime) -> str:
    """A date bound written into the SQL, not bound as a parameter. How many rows a date range
    selects decides the plan, and a prepared statement's generic plan cannot see it: after
    five runs PostgreSQL settled on one that read every Encounter dated before the range's
    end (313 ms against 2.6 ms for a month of 10,000 patients' Encounters). Literals alone
    were not enough (the same month's statement recurs, its other values bound, and got a
    generic plan of 57 ms against 1.1 ms): such SQL also sets `Compiler.custom_plans`. The
    text is isoformat() of a datetime this module parsed: digits and `-:.+T` only."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"'{moment.isoformat()}'::timestamptz"


# Span buckets (santong.search.index.span_bucket) up to the longest span there can be.
_SPAN_BUCKETS = span_bucket(EARLIEST, LATEST) + 1


# `near`: the distance when a search leaves it out (the spec leaves it to the server), the
# units it accepts (UCUM codes, and the plain `mi`), the Earth's mean radius (IUGG).
NEAR_DEFAULT_KM = 5.0
_NEAR_UNITS = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344, "[nmi_i]": 1.852}
_EARTH_KM = 6371.0088
_KM_PER_DEGREE = math.pi * _EARTH_KM / 180


def _near_value(key: str, text: str) -> tuple[float, float, float, str]:
    """(latitude, longitude, kilometres, units as given) of a `near` value, or a 400 naming
    the parameter."""
    parts = text.split("|")
    try:
        if not 2 <= len(parts) <= 4:
            raise ValueError
        latitude, longitude = float(parts[0]), float(parts[1])
        distance = float(parts[2]) if len(parts) > 2 and parts[2] else None
        units = parts[3] if len(parts) > 3 and parts[3] else "km"
    except ValueError:
        raise error(400, "invalid", f"{key} takes latitude|longitude|distance|units, not "
                    f"{text!r}", expression=key) from None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise error(400, "invalid", f"{key}: {text!r} is not a WGS84 latitude|longitude",
                    expression=key)
    if units not in _NEAR_UNITS:
        raise error(400, "invalid", f"{key}: unknown distance units {units!r} (km, m, [mi_i],"
                    " [nmi_i])", expression=key)
    if distance is None:
        return latitude, longitude, NEAR_DEFAULT_KM, units
    if not 0 <= distance < math.inf:
        raise error(400, "invalid", f"{key}: the distance must be a number of 0 or more",
                    expression=key)
    return latitude, longitude, distance * _NEAR_UNITS[units], units


# The UCUM code of each `near` unit, for the distance a searchset reports.
_NEAR_UCUM = {"km": "km", "m": "m", "[mi_i]": "[mi_i]", "mi": "[mi_i]", "[nmi_i]": "[nmi_i]"}
LOCATION_DISTANCE = "http://hl7.org/fhir/StructureDefinition/location-distance"


def _great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The haversine distance, as the SQL of Compiler._near computes it."""
    h = (math.sin(math.radians(lat2 - lat1) / 2) ** 2 + math.cos(math.radians(lat1))
         * math.cos(math.radians(lat2)) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def near_distance(resource_type: str, params: list[tuple[str, str]],
                  resource: dict[str, Any]) -> dict[str, Any] | None:
    """The `location-distance` extension of a match found with `near`: its distance from the
    nearest point the search names, in that point's units (a Distance); None without `near`.

    http://hl7.org/fhir/R4/extension-location-distance.html (on Bundle.entry.search)
    """
    nearest: tuple[float, str] | None = None
    for key, value in params:
        code, _, modifier = key.partition(":")
        param = get(resource_type, code)
        if modifier or param is None or not param.positional:
            continue
        try:
            positions = [p for node in extract(resource, param)
                         for p in values.position_values(node.value)]
        except ExtractionError:
            continue
        for text in split_values(value):
            latitude, longitude, _, units = _near_value(key, text)
            for position in positions:
                kilometres = _great_circle_km(latitude, longitude, *position)
                if nearest is None or kilometres < nearest[0]:
                    nearest = kilometres, units
    if nearest is None:
        return None
    kilometres, units = nearest
    return {"url": LOCATION_DISTANCE, "valueDistance": {
        "value": round(kilometres / _NEAR_UNITS[units], 6), "unit": _NEAR_UCUM[units],
        "system": ucum.UCUM, "code": _NEAR_UCUM[units]}}


@dataclass(frozen=True)
class Probe:
    """A top-level condition the engine may test row by row while walking rids in order.

    `condition` is its text in the WHERE clause; `per_row` replaces it in the walk; `matches`
    lists its index rows cheaply (counted to judge density), or is None when only a sample
    of the walk can tell. `looked_up`, when given, is the same test as an index lookup for
    each walked row, for the walk to use instead of `per_row` when the matches are so many
    that reading them all costs more than a lookup per row (santong.search.engine).
    """

    condition: str
    per_row: str
    matches: str | None
    looked_up: str | None = None
    # The matches in rid order (the default sort), given binds for the rid after which to
    # start (None: from the first) and how many: (WITH clause or "", a query over it giving
    # one row `(values_seen, rids)`), see Compiler._in_rid_order.
    ordered: Callable[[str | None, str], tuple[str, str]] | None = None
    # Whether `ordered` lists a prefix's distinct values, so may find too many of them
    # (ORDERED_VALUES), which the engine then remembers; a name's first character cannot.
    crowds: bool = False


# The most values (bound parameters) one search may match against.
MAX_VALUES = 10_000

# A string prefix matching more distinct values than this is not read value by value in rid
# order (Probe.ordered): a page would merge as many index ranges.
ORDERED_VALUES = 64

# The string codes whose values' first characters are indexed in rid order (migration 0014,
# whose partial index lists the same codes).
NAME_INITIAL_CODES = frozenset({"name", "given"})


class Compiler:
    """Builds SQL for one search; bind names are unique across nested sub-queries."""

    def __init__(self, base_url: str = "",
                 terminology: dict[tuple[str, str], frozenset[tuple[str | None, str | None]]]
                 | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # Code sets of :in/:not-in/:above/:below values, resolved beforehand (see terminology).
        self.terminology = terminology or {}
        self._names = itertools.count()
        self.binds: dict[str, Any] = {}
        self._aliases = itertools.count(1)
        # Top-level conditions whose matches PostgreSQL may underestimate: the engine checks
        # how dense they are and may find a page by walking rids in order (see Probe).
        self.probes: list[Probe] = []
        # Queries listing the rids of resources that may match (a superset), cheap to run:
        # when one lists few, the engine makes it the search's starting point (see
        # `_spans_near`).
        self.narrowings: list[str] = []
        # Whether the SQL holds values whose selectivity decides its plan (date bounds, see
        # `_instant`): then it must be planned for them each time, not once for any.
        self.custom_plans = False
        # Whether string prefixes went in as bound index ranges (`_string`): the search's own
        # plan is then made for their values (how many a prefix matches decides it), while
        # the engine's counts and walks, the same plan for any name, may keep a generic one.
        self.string_ranges = False
        # Set while compiling a condition tested row by row in such a walk: index lookups go
        # by the row's rid only (not the value index, which a bad estimate could pick).
        self._per_row = False
        # The bound (lower, upper, LIKE pattern) of each alternative of the string match last
        # compiled (`_string`), when each is an index range: for Probe.ordered.
        self._ranges: list[tuple[str, str, str]] = []

    def bind(self, value: Any) -> str:
        name = f"b{next(self._names)}"
        self.binds[name] = value
        return f":{name}"

    def alias(self, prefix: str) -> str:
        return f"{prefix}{next(self._aliases)}"

    # -- the entry point -------------------------------------------------------------------

    def compile(
        self, resource_type: str, params: list[tuple[str, str]], *, strict: bool, alias: str = "r"
    ) -> Compiled:
        compiled = Compiled(binds=self.binds)
        windows: dict[str, tuple[datetime | None, datetime | None]] = {}
        start = len(self.binds)
        for key, value in params:
            if key in RESULT_PARAMETERS or key.split(":")[0] in RESULT_PARAMETERS:
                continue
            try:
                compiled.where.append(self.parameter(resource_type, alias, key, value))
                compiled.applied.append((key, value))
            except UnknownParameter as exc:
                if strict:
                    raise error(400, "not-supported", str(exc), expression=key) from None
                compiled.ignored.append(key)
                continue
            if len(self.binds) - start > MAX_VALUES:
                # A statement takes at most 32,767 parameters (40,000 identifiers were a 500).
                raise error(400, "too-costly", f"The search has more than {MAX_VALUES:,} values"
                            f" to match (reached at '{key}'): split it into several searches",
                            expression=key)
            # A plain date parameter (no modifier, no chain) with rows in search_date.
            param = None if key.startswith("_") else get(resource_type, key)
            if param is not None and param.type == "date":
                earliest, latest = self._window(key, split_values(value))
                known = windows.get(key, (None, None))
                windows[key] = (max(filter(None, (earliest, known[0])), default=None),
                                min(filter(None, (latest, known[1])), default=None))
        for code, (earliest, latest) in windows.items():
            if earliest is not None and latest is not None:
                self.narrowings.append(self._spans_near(resource_type, code, earliest, latest))
        return compiled

    def parameter(self, resource_type: str, alias: str, key: str, value: str) -> str:
        """The SQL condition for one `key=value` pair on resources of `resource_type`."""
        if key.startswith("_has:"):
            return self._has(resource_type, alias, key, value)
        name, _, modifier = key.partition(":")
        if "." in name or "." in modifier:
            return self._chain(resource_type, alias, key, value)
        if name == "_id":
            return self._id(alias, key, modifier, value)
        if name == "_lastUpdated":
            return self._last_updated(alias, key, modifier, value)
        if name in ("_text", "_content"):
            return self._full_text(alias, name, key, modifier, value)
        if name == "_list":
            return self._list(alias, key, value)
        param = get(resource_type, name)
        if param is None:
            raise UnknownParameter(
                f"Unknown search parameter {name!r} for {resource_type}")
        if modifier == "missing":
            return self._missing(param, alias, key, value)
        alternatives = split_values(value)
        if not all(alternatives):
            raise error(400, "invalid", f"Search parameter {key!r} has an empty value",
                        expression=key)
        if param.type == "composite":
            return self._composite(param, alias, key, modifier, alternatives)
        if param.positional:
            return self._near(param, alias, key, modifier, alternatives)
        if param.type not in _TABLE:
            raise UnknownParameter(
                f"Search parameter {name!r} ({param.type}) is not supported yet")
        table, condition, negate = self.match(param, key, modifier, alternatives)
        if param.type == "string" and not modifier:
            found = self._prefix_matches(resource_type, alias, param.index_codes, condition,
                                         self._ranges)
        else:
            found = self._exists(table, alias, param.index_codes, condition, negate)
        if param.type == "string" and not modifier:
            found = self._widened(resource_type, alias, param, key, alternatives, found)
        return found

    def match(self, param: SearchParameter, key: str, modifier: str,
              alternatives: list[str]) -> tuple[str, str, bool]:
        """(index table, condition over its row `{x}`, negated?) for values of `param`."""
        method = getattr(self, f"_{param.type}")
        return method(param, key, modifier, alternatives)  # type: ignore[no-any-return]

    # -- helpers -----------------------------------------------------------------------------

    def code_is(self, column: str, codes: str | tuple[str, ...]) -> str:
        """`column` (an index row's code) is the code, or one of the codes (a parameter's
        index_codes: several when its values are the union of other parameters' rows)."""
        if isinstance(codes, str) or len(codes) == 1:
            return f"{column} = {self.bind(codes if isinstance(codes, str) else codes[0])}"
        return f"{column} = ANY({self.bind(list(codes))})"

    def _exists(self, table: str, alias: str, code: str | tuple[str, ...], condition: str,
                negate: bool = False) -> str:
        x = self.alias("x")
        # rid alone names the resource; the type lets PostgreSQL start from the value index
        # instead, which a walk testing row by row must not do.
        same_type = "" if self._per_row else f" AND {x}.resource_type = {alias}.resource_type"
        sql = (f"EXISTS (SELECT 1 FROM {table} {x} WHERE {x}.rid = {alias}.rid{same_type}"
               f" AND {self.code_is(f'{x}.code', code)} AND ({condition.format(x=x)}))")
        return f"NOT {sql}" if negate else sql

    def _prefix_matches(self, resource_type: str, alias: str, code: tuple[str, ...],
                        condition: str, ranges: list[tuple[str, str, str]]) -> str:
        """A string prefix match as an uncorrelated IN over the index, which holds the rid:
        read from the index alone, and hashed once when PostgreSQL tests it row by row (the
        engine's walk)."""
        if self._per_row:
            return self._exists("search_string", alias, code, condition)
        x = self.alias("x")
        matches = (f"SELECT {x}.rid FROM search_string {x} WHERE {x}.resource_type ="
                   f" {self.bind(resource_type)} AND {self.code_is(f'{x}.code', code)}"
                   f" AND ({condition.format(x=x)})")
        found = f"{alias}.rid IN ({matches})"
        if alias == "r":
            # PostgreSQL estimates prefix matches from the value's statistics across all
            # parameters and underestimates common ones (a family name shared by one patient
            # in ten): the engine counts them first (santong.search.engine, _dense). Hashed
            # once, the IN also serves the walk; with very many matches a lookup per walked
            # row (the (rid, code) index, migration 0011) costs less than hashing them all.
            # A scalar subquery with LIMIT, which PostgreSQL cannot turn into a hash of all
            # the matches as it may an EXISTS; COALESCE keeps it two-valued.
            y = self.alias("x")
            looked_up = (f"COALESCE((SELECT true FROM search_string {y} WHERE {y}.rid ="
                         f" {alias}.rid AND {self.code_is(f'{y}.code', code)}"
                         f" AND ({condition.format(x=y)}) LIMIT 1), false)")
            ordered, crowds = None, False
            if len(code) == 1 and len(ranges) == 1:
                lower = ranges[0][0]
                if code[0] in NAME_INITIAL_CODES and len(self.binds[lower[1:]]) == 1:
                    ordered = self._initial_in_rid_order(resource_type, code[0], lower)
                else:
                    ordered, crowds = self._in_rid_order(resource_type, code[0], *ranges[0]), True
            self.probes.append(Probe(found, found, matches, looked_up, ordered, crowds))
        return found

    def _initial_in_rid_order(self, resource_type: str, code: str, initial: str
                              ) -> Callable[[str | None, str], tuple[str, str]]:
        """The matches of a one-character prefix of a name in rid order: one range of the
        index of names' first characters (migration 0014), whose rows come in rid order, so a
        page reads about a page of rows however many names begin with the character."""
        t = self.bind(resource_type)

        def ordered(after: str | None, limit: str) -> tuple[str, str]:
            later = "" if after is None else f" AND y.rid > {after}"
            # The code as a literal (one of NAME_INITIAL_CODES): the index is partial.
            return "", (
                "SELECT 1 AS values_seen, ARRAY(SELECT DISTINCT y.rid FROM search_string y"
                f" WHERE y.resource_type = {t} AND y.code = '{code}'"
                f" AND left(y.value, 1) = {initial}{later} ORDER BY y.rid LIMIT {limit}) AS rids")
        return ordered

    def _in_rid_order(self, resource_type: str, code: str, lower: str, upper: str,
                      like: str) -> Callable[[str | None, str], tuple[str, str]]:
        """The matches of one string prefix in rid order, from the value index alone (its
        last column is rid, migration 0013): the prefix's distinct values found one index
        descent each (a skip scan, the recursive part), then each value's first rids after
        the cursor, merged. A page of `family=王` reads about a page of index rows, however
        many share the name. Gives how many values it found (at most ORDERED_VALUES) and the
        rids; a resource matching under several values or names is listed once.

        A first page needs fewer descents: the skip scan lands on each value's first rid
        (the index is in value, rid order), and n distinct first rids are n matches, so the
        page lies at or below the n-th smallest of them; values whose first rid is above it
        are not read again (艳 among 100,000 patients: 21 of its 35 names read, 2 rows each,
        instead of 35 names, 20 rows each; 1.0 → 0.64 ms under EXPLAIN ANALYZE)."""
        t, c = self.bind(resource_type), self.bind(code)
        same = f"y.resource_type = {t} AND y.code = {c}"
        # The skip scan, in value order, each value with its first rid (what a first page
        # bounds itself by; a later page reads each value from the cursor instead).
        skip_scan = [
            "prefix_values(value, rid) AS ((SELECT y.value, y.rid FROM search_string y"
            f" WHERE {same} AND y.value ~>=~ {lower} AND y.value ~<~ {upper}"
            " ORDER BY y.value USING ~<~, y.rid LIMIT 1) UNION ALL SELECT n.value, n.rid"
            " FROM prefix_values v CROSS JOIN LATERAL (SELECT y.value, y.rid"
            f" FROM search_string y WHERE {same} AND y.value ~>~ v.value AND y.value ~<~ {upper}"
            " ORDER BY y.value USING ~<~, y.rid LIMIT 1) n)",
            "prefix_seen AS MATERIALIZED (SELECT v.value, v.rid FROM prefix_values v"
            f" WHERE v.value LIKE {like} LIMIT {ORDERED_VALUES})"]

        def merged(values: str, rids: str, limit: str) -> str:
            """The values' first `limit` rids (those `rids` admits) each, merged in order."""
            return ("SELECT (SELECT count(*) FROM prefix_seen) AS values_seen, ARRAY(SELECT"
                    f" DISTINCT m.rid FROM {values} d CROSS JOIN LATERAL (SELECT DISTINCT y.rid"
                    f" FROM search_string y WHERE {same} AND y.value = d.value AND {rids}"
                    f" ORDER BY y.rid LIMIT {limit}) m ORDER BY m.rid LIMIT {limit}) AS rids")

        def ordered(after: str | None, limit: str) -> tuple[str, str]:
            if after is None:
                bound = (
                    "prefix_bound AS MATERIALIZED (SELECT coalesce((SELECT max(b.rid) FROM"
                    f" (SELECT DISTINCT s.rid FROM prefix_seen s ORDER BY s.rid LIMIT {limit}) b"
                    f" HAVING count(*) >= {limit}), {2**63 - 1}) AS t)")
                scan = ("prefix_scan AS MATERIALIZED (SELECT d.value, d.rid, b.t"
                        " FROM prefix_seen d, prefix_bound b WHERE d.rid <= b.t)")
                return "WITH RECURSIVE " + ", ".join([*skip_scan, bound, scan]), merged(
                    "prefix_scan", "y.rid >= d.rid AND y.rid <= d.t", limit)
            return "WITH RECURSIVE " + ", ".join(skip_scan), merged(
                "prefix_seen", f"y.rid > {after}", limit)
        return ordered

    def _widened(self, resource_type: str, alias: str, param: SearchParameter, key: str,
                 alternatives: list[str], found: str) -> str:
        """`found`, or also the values of parameters whose transforms widen `param` (Patient
        `name` also matches the pinyin of Chinese names, santong.search.pinyin)."""
        ors = [found]
        for transform in transforms.widening(param.url):
            other = by_url(transform.url)
            extra = get(resource_type, other.code) if other is not None else None
            if extra is None or extra.url != transform.url:  # its SearchParameter is not loaded
                continue
            _, condition, _ = self._string(extra, key, "", alternatives)
            if condition != "false":
                ors.append(self._exists("search_string", alias, extra.code, condition))
        return f"({' OR '.join(ors)})" if len(ors) > 1 else found

    def _missing(self, param: SearchParameter, alias: str, key: str, value: str) -> str:
        if value not in ("true", "false"):
            raise error(400, "invalid", f"{key} takes true or false, not {value!r}",
                        expression=key)
        table = "search_position" if param.positional else _TABLE.get(param.type)
        if table is None or param.expression is None:
            raise UnknownParameter(f"{key} is not supported for {param.type} parameters")
        return self._exists(table, alias, param.index_codes, "true", negate=value == "true")

    def _modifier_error(self, key: str, modifier: str, param: SearchParameter) -> FhirError:
        return error(400, "not-supported",
                     f"Modifier :{modifier} is not supported on {param.type} parameter "
                     f"{param.code!r}", expression=key)

    # -- parameter types -------------------------------------------------------------------

    def _string(self, param: SearchParameter, key: str, modifier: str,
                alternatives: list[str]) -> tuple[str, str, bool]:
        ors = []
        ranges: list[tuple[str, str, str]] = []
        transform = transforms.for_url(param.url)
        for text in alternatives:
            # Values computed by a transform are looked up in its form (pinyin: no tones).
            folded = values.normalise(text) if transform is None else transform.query(text)
            if modifier == "exact":
                ors.append(f"{{x}}.exact = {self.bind(text)}")
            elif modifier not in ("", "text", "contains"):
                raise self._modifier_error(key, modifier, param)
            elif folded is None:  # cannot match what the transform indexes
                continue
            elif modifier == "contains":
                pattern = "%" + _like_prefix(folded) + "%"
                ors.append(f"{{x}}.value LIKE {self.bind(pattern)}")
            else:
                # The prefix's range in the index, bound: the plan is the same for any name,
                # so PostgreSQL may keep one (with LIKE alone it planned every search, about
                # as long as running it). LIKE stays the test.
                like = self.bind(_like_prefix(folded) + '%')
                pattern = f"{{x}}.value LIKE {like}"
                upper = _successor(folded)
                if upper is not None:
                    self.string_ranges = True
                    ranges.append((self.bind(folded), self.bind(upper), like))
                    pattern = (f"{{x}}.value ~>=~ {ranges[-1][0]} AND {{x}}.value ~<~"
                               f" {ranges[-1][1]} AND {pattern}")
                ors.append(f"({pattern})")
        self._ranges = ranges if len(ranges) == len(ors) else []
        return "search_string", " OR ".join(ors) or "false", False

    def _token(self, param: SearchParameter, key: str, modifier: str,
               alternatives: list[str]) -> tuple[str, str, bool]:
        ors = []
        for text in alternatives:
            if modifier == "text":
                pattern = _like_prefix(values.normalise(text)) + "%"
                ors.append(f"{{x}}.text LIKE {self.bind(pattern)}")
                continue
            if modifier == "of-type":
                parts = text.replace("\\|", "\x00").split("|")
                if len(parts) != 3 or not all(parts):
                    raise error(400, "invalid", f"{key} takes system|code|value, not {text!r}",
                                expression=key)
                type_system, type_code, identifier = (p.replace("\x00", "|") for p in parts)
                ors.append(f"{{x}}.type_system = {self.bind(type_system)} AND "
                           f"{{x}}.type_code = {self.bind(type_code)} AND "
                           f"{{x}}.value = {self.bind(identifier)}")
                continue
            if modifier in ("in", "not-in", "above", "below"):
                ors.append(self._code_set(key, modifier, text))
                continue
            if modifier not in ("", "not"):
                raise self._modifier_error(key, modifier, param)
            ors.append(self._token_match(text))
        return "search_token", " OR ".join(ors), modifier in ("not", "not-in")

    def _code_set(self, key: str, modifier: str, text: str) -> str:
        codes = self.terminology.get((modifier, text))
        if codes is None:
            raise error(400, "not-supported", f"{key}: :{modifier} needs the terminology "
                        "resolved first", expression=key)
        whole = sorted({s for s, c in codes if c is None and s})
        pairs = sorted((s or "", c) for s, c in codes if c is not None)
        ors = []
        if whole:
            ors.append(f"{{x}}.system = ANY({self.bind(whole)})")
        if pairs:
            ors.append(f"({{x}}.system, {{x}}.value) IN (SELECT * FROM unnest("
                       f"CAST({self.bind([s for s, _ in pairs])} AS text[]), "
                       f"CAST({self.bind([c for _, c in pairs])} AS text[])))")
        return " OR ".join(ors) if ors else "false"

    def _token_match(self, text: str) -> str:
        system, code = split_token(text)
        if system is None:
            return f"{{x}}.value = {self.bind(code)}"
        if system == "":
            return f"{{x}}.value = {self.bind(code)} AND {{x}}.system IS NULL"
        if code == "":
            return f"{{x}}.system = {self.bind(system)}"
        return f"{{x}}.value = {self.bind(code)} AND {{x}}.system = {self.bind(system)}"

    def _reference(self, param: SearchParameter, key: str, modifier: str,
                   alternatives: list[str]) -> tuple[str, str, bool]:
        ors = []
        for text in alternatives:
            if modifier == "identifier":
                system, code = split_token(text)
                if system is None:
                    ors.append(f"{{x}}.identifier_value = {self.bind(code)}")
                elif code == "":
                    ors.append(f"{{x}}.identifier_system = {self.bind(system)}")
                else:
                    ors.append(f"{{x}}.identifier_value = {self.bind(code)} AND "
                               f"{{x}}.identifier_system = {self.bind(system)}")
                continue
            if modifier and not definitions.is_resource_type(modifier):
                raise self._modifier_error(key, modifier, param)
            ors.append(self._reference_match(text, modifier or None, key))
        return "search_reference", " OR ".join(ors), False

    def _reference_match(self, text: str, target_type: str | None, key: str) -> str:
        if self.base_url and text.startswith(self.base_url + "/"):
            text = text[len(self.base_url) + 1:]
        if "/" not in text and ":" not in text:  # a bare id
            parsed_type, parsed_id = None, text
        else:
            parsed_type, parsed_id, url = values.parse_reference(text)
            if url is not None or parsed_id is None:
                return f"{{x}}.url = {self.bind(url or text)}"
        if parsed_type is not None and target_type is not None and parsed_type != target_type:
            return "false"
        condition = f"{{x}}.target_id = {self.bind(parsed_id)}"
        if parsed_type or target_type:
            condition += f" AND {{x}}.target_type = {self.bind(parsed_type or target_type)}"
        return condition

    def _uri(self, param: SearchParameter, key: str, modifier: str,
             alternatives: list[str]) -> tuple[str, str, bool]:
        ors = []
        for text in alternatives:
            if modifier == "":
                ors.append(f"{{x}}.value = {self.bind(text)}")
            elif modifier == "below":
                ors.append(f"{{x}}.value LIKE {self.bind(_like_prefix(text) + '%')}")
            elif modifier == "above":
                ors.append(f"{self.bind(text)} LIKE replace(replace({{x}}.value, '%', '\\%'),"
                           f" '_', '\\_') || '%'")
            else:
                raise self._modifier_error(key, modifier, param)
        return "search_uri", " OR ".join(ors), False

    def _date(self, param: SearchParameter, key: str, modifier: str,
              alternatives: list[str]) -> tuple[str, str, bool]:
        if modifier:
            raise self._modifier_error(key, modifier, param)
        ors = [self._range_condition(key, text, "{x}.low", "{x}.high") for text in alternatives]
        return "search_date", " OR ".join(ors), False

    @staticmethod
    def _date_value(key: str, text: str) -> tuple[str, datetime, datetime]:
        """(prefix, start, end) of a date search value: [start, end) is its precision's range
        (widened for `ap`)."""
        prefix, date = _split_prefix(text)
        try:
            start, end = parse_range(date)
        except (ValueError, OverflowError):
            raise error(400, "invalid", f"{key}: {date!r} is not a valid date/dateTime",
                        expression=key) from None
        if prefix == "ap":  # approximately: the range widened by 10% of its distance from now
            slack = max(abs(datetime.now(start.tzinfo) - start) / 10, timedelta(days=1))
            start = start - slack if start - values.DATE_MIN > slack else values.DATE_MIN
            end = end + slack if values.DATE_MAX - end > slack else values.DATE_MAX
        return prefix, start, end

    def _window(self, key: str, alternatives: list[str]
                ) -> tuple[datetime | None, datetime | None]:
        """(earliest, latest) such that a resource meeting one of the alternatives has a value
        whose range reaches past `earliest` (its end is at or after it) and one that starts at
        or before `latest`; None where a side is open. True of every stored range, even one
        whose end precedes its start (an invalid Period): hence the inclusive bounds."""
        earliest: list[datetime | None] = []
        latest: list[datetime | None] = []
        for text in alternatives:
            prefix, start, end = self._date_value(key, text)
            low_side, high_side = {
                "eq": (start, end), "ap": (start, end), "ne": (None, None),
                "gt": (end, None), "sa": (end, None), "ge": (start, None),
                "lt": (None, start), "eb": (None, start), "le": (None, end),
            }[prefix]
            earliest.append(low_side)
            latest.append(high_side)
        return (None if None in earliest else min(earliest),  # type: ignore[type-var]
                None if None in latest else max(latest))  # type: ignore[type-var]

    def _spans_near(self, resource_type: str, code: str, earliest: datetime,
                    latest: datetime) -> str:
        """The rids whose span of `code` values (santong.search.index.with_spans) ends at or
        after `earliest` and starts at or before `latest`: a superset of a two-sided range's
        matches. A B-tree cannot answer both bounds of a range at once, but a span of bucket b
        is shorter than 2**(b + 1) seconds, so one that ends after `earliest` starts after
        `earliest - 2**(b + 1) s`: per bucket, one index range on the start, about as long as
        the window plus the bucket's spans. Bound, not literal: the plan is the same for any
        window, so the statement is prepared once (the engine counts it before the search)."""
        floors = []
        for bucket in range(_SPAN_BUCKETS):
            try:
                floors.append(earliest - timedelta(seconds=2 ** (bucket + 1)))
            except OverflowError:
                floors.append(EARLIEST)  # before any stored date
        # OFFSET 0 keeps each bucket's range a scan of its own (not one join over all spans).
        return (f"SELECT n.rid FROM unnest(CAST({self.bind(floors)} AS timestamptz[]))"
                f" WITH ORDINALITY AS v(floor, bucket) CROSS JOIN LATERAL (SELECT s.rid"
                f" FROM search_date s WHERE s.resource_type = {self.bind(resource_type)}"
                f" AND s.code = {self.bind(code)} AND s.span_bucket = v.bucket - 1"
                f" AND s.span_low >= v.floor AND s.span_low <= {self.bind(latest)}"
                f" AND s.span_high >= {self.bind(earliest)} OFFSET 0) n")

    def _range_condition(self, key: str, text: str, low: str, high: str | timedelta) -> str:
        """A target range [low, high) against a date search value with a prefix. `high` may be
        the range's fixed width instead (lastUpdated's millisecond): its tests are then written
        on `low` alone, which an index on that column answers."""
        prefix, start, end = self._date_value(key, text)
        s, e = _instant(start), _instant(end)
        self.custom_plans = True

        def ends(operator: str, bound: datetime) -> str:
            if not isinstance(high, timedelta):
                return f"{high} {operator} {_instant(bound)}"
            try:
                return f"{low} {operator} {_instant(bound - high)}"
            except OverflowError:  # before year 1: every stored instant is after it
                return f"{low} {operator} '-infinity'::timestamptz"

        contained = f"{low} >= {s} AND {ends('<=', end)}"
        return {
            "eq": contained,
            "ne": f"NOT ({contained})",
            "gt": ends(">", end),
            "lt": f"{low} < {s}",
            "ge": f"({ends('>', end)} OR ({contained}))",
            "le": f"({low} < {s} OR ({contained}))",
            "sa": f"{low} >= {e}",
            "eb": ends("<=", start),
            "ap": f"{low} < {e} AND {ends('>', start)}",
        }[prefix]

    def _number_condition(self, key: str, text: str, column: str) -> str:
        prefix, number = _split_prefix(text)
        try:
            value, low, high = values.precision_range(number)
        except (InvalidOperation, ValueError):
            raise error(400, "invalid", f"{key}: {number!r} is not a number",
                        expression=key) from None
        if not value.is_finite():
            raise error(400, "invalid", f"{key}: {number!r} is not a number", expression=key)
        v = self.bind(value)
        if prefix == "eq":
            return f"{column} >= {self.bind(low)} AND {column} < {self.bind(high)}"
        if prefix == "ne":
            return f"NOT ({column} >= {self.bind(low)} AND {column} < {self.bind(high)})"
        if prefix == "ap":
            slack = abs(value) / 10
            return f"{column} BETWEEN {self.bind(value - slack)} AND {self.bind(value + slack)}"
        operator = {"gt": ">", "sa": ">", "lt": "<", "eb": "<", "ge": ">=", "le": "<="}[prefix]
        return f"{column} {operator} {v}"

    def _canonical_condition(self, key: str, text: str, system: str | None,
                             unit: str | None) -> str | None:
        """A UCUM quantity compared in canonical units: 5|…|g finds 5000 mg."""
        if system != ucum.UCUM or not unit or ucum.canonical(unit) is None:
            return None
        factor, canonical_unit = ucum.canonical(unit)  # type: ignore[misc]
        prefix, number = _split_prefix(text)
        try:
            scaled = values.precision_range(number)
        except (InvalidOperation, ValueError):
            raise error(400, "invalid", f"{key}: {number!r} is not a number",
                        expression=key) from None
        # Scale the search value and its precision range into canonical units.
        value, low, high = (v * factor for v in scaled)
        column = "{x}.canonical_value"
        condition = {
            "eq": f"{column} >= {self.bind(low)} AND {column} < {self.bind(high)}",
            "ne": f"NOT ({column} >= {self.bind(low)} AND {column} < {self.bind(high)})",
            "ap": f"{column} BETWEEN {self.bind(value - abs(value) / 10)}"
                  f" AND {self.bind(value + abs(value) / 10)}",
        }.get(prefix)
        if condition is None:
            operator = {"gt": ">", "sa": ">", "lt": "<", "eb": "<", "ge": ">=", "le": "<="}[
                prefix]
            condition = f"{column} {operator} {self.bind(value)}"
        return f"{{x}}.canonical_unit = {self.bind(canonical_unit)} AND {condition}"

    def _number(self, param: SearchParameter, key: str, modifier: str,
                alternatives: list[str]) -> tuple[str, str, bool]:
        if modifier:
            raise self._modifier_error(key, modifier, param)
        ors = [self._number_condition(key, text, "{x}.value") for text in alternatives]
        return "search_number", " OR ".join(ors), False

    def _quantity(self, param: SearchParameter, key: str, modifier: str,
                  alternatives: list[str]) -> tuple[str, str, bool]:
        if modifier:
            raise self._modifier_error(key, modifier, param)
        ors = []
        for text in alternatives:
            parts = text.replace("\\|", "\x00").split("|")
            if len(parts) not in (1, 3):
                raise error(400, "invalid", f"{key} takes [prefix]number|system|code, not "
                            f"{text!r}", expression=key)
            system, unit = ((p.replace("\x00", "|") for p in parts[1:]) if len(parts) == 3
                            else (None, None))
            canonical = self._canonical_condition(key, parts[0], system, unit)
            if canonical is not None:
                ors.append(canonical)
                continue
            condition = self._number_condition(key, parts[0], "{x}.value")
            if system:
                condition += f" AND {{x}}.system = {self.bind(system)}"
            if unit:
                condition += f" AND {{x}}.unit = {self.bind(unit)}"
            ors.append(condition)
        return "search_quantity", " OR ".join(ors), False

    def _near(self, param: SearchParameter, alias: str, key: str, modifier: str,
              alternatives: list[str]) -> str:
        """`near=latitude|longitude|distance|units` (Location.position, WGS84; search.html#special
        and the Location-near definition): within that great-circle distance, kilometres
        unless `units` says otherwise, NEAR_DEFAULT_KM when the distance is left out. An index
        range on latitude first (and on longitude where the box does not cross ±180° or reach
        a pole), then the exact distance (haversine on a sphere of the Earth's mean radius)."""
        if modifier:
            raise self._modifier_error(key, modifier, param)
        ors = []
        for text in alternatives:
            latitude, longitude, kilometres, _ = _near_value(key, text)
            lat, lon, km = self.bind(latitude), self.bind(longitude), self.bind(kilometres)
            degrees = kilometres / _KM_PER_DEGREE  # of latitude; of longitude at the equator
            box = [f"{{x}}.latitude BETWEEN {self.bind(latitude - degrees)}"
                   f" AND {self.bind(latitude + degrees)}"]
            # The widest longitude of the circle (J. P. Matuschek, "Finding points within a
            # distance of a latitude/longitude"), a hair wider for rounding; from 1 on, the
            # circle holds a pole and every longitude (so does one past a quarter of the globe).
            angle = kilometres / _EARTH_KM
            reach = math.sin(angle) / math.cos(math.radians(latitude))
            if angle < math.pi / 2 and reach < 1:
                spread = math.degrees(math.asin(reach)) * 1.000001 + 1e-9
                if longitude - spread >= -180 and longitude + spread <= 180:
                    box.append(f"{{x}}.longitude BETWEEN {self.bind(longitude - spread)}"
                               f" AND {self.bind(longitude + spread)}")
            distance = (f"2 * {_EARTH_KM} * asin(least(1, sqrt(power(sin(radians({{x}}.latitude"
                        f" - {lat}) / 2), 2) + cos(radians({lat})) * cos(radians({{x}}.latitude))"
                        f" * power(sin(radians({{x}}.longitude - {lon}) / 2), 2))))")
            ors.append(f"({' AND '.join(box)} AND {distance} <= {km})")
        return self._exists("search_position", alias, param.code, " OR ".join(ors))

    def _composite(self, param: SearchParameter, alias: str, key: str, modifier: str,
                   alternatives: list[str]) -> str:
        """`code-value-quantity=http://loinc.org|8480-6$gt100`: all components in one value."""
        if modifier:
            raise self._modifier_error(key, modifier, param)
        components = [by_url(url) for url, _ in param.components]
        if any(c is None or c.type not in TABLES for c in components):
            raise UnknownParameter(f"Composite parameter {param.code!r} is not supported")
        ors = []
        for text in alternatives:
            parts = [p.replace("\x00", "$") for p in text.replace("\\$", "\x00").split("$")]
            if len(parts) != len(components):
                raise error(400, "invalid", f"{key} takes {len(components)} values separated "
                            f"by '$', not {text!r}", expression=key)
            ands = []
            for position, (part, component) in enumerate(zip(parts, components, strict=True)):
                assert component is not None
                _, condition, negate = self.match(component, key, "", [part])
                e = self.alias("e")
                columns = ", ".join(TABLES[component.type][1:])
                sub = (f"EXISTS (SELECT 1 FROM jsonb_to_recordset({{x}}.components->{position})"
                       f" AS {e}({columns}) WHERE {condition.format(x=e)})")
                ands.append(f"NOT {sub}" if negate else sub)
            ors.append(" AND ".join(ands))
        return self._exists("search_composite", alias, param.index_codes,
                            " OR ".join(f"({o})" for o in ors))

    # -- common and special parameters -----------------------------------------------------

    def _id(self, alias: str, key: str, modifier: str, value: str) -> str:
        ids = [v for v in split_values(value) if v]
        if modifier or not ids:
            raise error(400, "invalid", f"{key}: expected one or more ids", expression=key)
        return f"{alias}.id = ANY({opaque(self.bind(ids), 'text[]')})"

    def _last_updated(self, alias: str, key: str, modifier: str, value: str) -> str:
        if modifier:
            raise error(400, "not-supported", f"{key}: modifiers are not supported",
                        expression=key)
        # lastUpdated is an instant: the range of its millisecond.
        column = f"{alias}.last_updated"
        ors = [self._range_condition(key, text, column, timedelta(milliseconds=1))
               for text in split_values(value)]
        return " OR ".join(f"({o})" for o in ors)

    def _full_text(self, alias: str, name: str, key: str, modifier: str, value: str) -> str:
        if modifier:
            raise error(400, "not-supported", f"{key}: modifiers are not supported",
                        expression=key)
        ors = [f"{{x}}.document @@ phraseto_tsquery('simple', "
               f"{self.bind(values.text_document(v))})" for v in split_values(value) if v]
        if not ors:
            raise error(400, "invalid", f"{key} has an empty value", expression=key)
        return self._exists("search_text", alias, name, " OR ".join(ors))

    def _list(self, alias: str, key: str, value: str) -> str:
        x, lst = self.alias("x"), self.alias("l")
        ids = [v for v in split_values(value) if v]
        return (f"EXISTS (SELECT 1 FROM resource {lst} JOIN search_reference {x}"
                f" ON {x}.rid = {lst}.rid AND {x}.code = 'item'"
                f" WHERE {lst}.resource_type = 'List' AND {lst}.id = ANY({self.bind(ids)})"
                f" AND NOT {lst}.deleted AND {x}.target_type = {alias}.resource_type"
                f" AND {x}.target_id = {alias}.id)")

    def _chain(self, resource_type: str, alias: str, key: str, value: str) -> str:
        """`subject:Patient.name=x`: resources whose reference points at a matching resource."""
        head, _, rest = key.partition(".")
        name, _, target = head.partition(":")
        param = get(resource_type, name)
        if param is None:
            raise UnknownParameter(f"Unknown search parameter {name!r} for {resource_type}")
        if param.type != "reference":
            raise error(400, "invalid", f"{key}: only reference parameters can be chained "
                        f"({name!r} is a {param.type})", expression=key)
        targets = [target] if target else list(param.targets)
        if target and not definitions.is_resource_type(target):
            raise error(400, "invalid", f"{key}: {target!r} is not a resource type",
                        expression=key)
        # Inside out: the matching targets first, then who refers to them (an uncorrelated
        # IN, which PostgreSQL starts from the selective inner condition), one branch per
        # target type. A correlated EXISTS with an OR of target types made it test every
        # resource of the searched type instead (10 s for Encounter?subject.identifier at
        # 100,000 patients).
        branches = []
        for target_type in targets:
            x, r2 = self.alias("x"), self.alias("c")
            try:
                inner = self.parameter(target_type, r2, rest, value)
            except UnknownParameter:
                continue
            target = self.bind(target_type)
            branches.append(
                f"SELECT {x}.rid FROM resource {r2} JOIN search_reference {x}"
                f" ON {x}.resource_type = {self.bind(resource_type)}"
                f" AND {x}.code = {self.bind(name)} AND {x}.target_id = {r2}.id"
                f" AND {x}.target_type = {target}"
                f" WHERE {r2}.resource_type = {target} AND NOT {r2}.deleted AND {inner}")
        if not branches:
            raise UnknownParameter(f"{key}: no target of {name!r} has a parameter {rest!r}")
        return f"{alias}.rid IN ({' UNION ALL '.join(branches)})"

    def _has(self, resource_type: str, alias: str, key: str, value: str) -> str:
        """`_has:Observation:patient:code=x`: resources that matching Observations refer to."""
        parts = key.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise error(400, "invalid", f"{key}: expected _has:Type:reference:parameter",
                        expression=key)
        _, source_type, reference, rest = parts
        if not definitions.is_resource_type(source_type):
            raise error(400, "invalid", f"{key}: {source_type!r} is not a resource type",
                        expression=key)
        param = get(source_type, reference)
        if param is None or param.type != "reference":
            raise UnknownParameter(f"{key}: {source_type} has no reference parameter "
                                   f"{reference!r}")
        source, code = self.bind(source_type), self.bind(reference)
        target = self.bind(resource_type)
        if self._per_row:
            return self._has_per_row(source_type, alias, rest, value, source, code, target)
        x, r2 = self.alias("x"), self.alias("h")
        inner = self.parameter(source_type, r2, rest, value)
        # Inside out, like chains: the matching sources first (from the inner condition's
        # index), then the ids they point at, as an uncorrelated IN. The correlated EXISTS
        # probed the inner index per candidate (over 60 s at 100,000 patients).
        found = (f"{alias}.id IN (SELECT {x}.target_id FROM resource {r2}"
                 f" JOIN search_reference {x} ON {x}.rid = {r2}.rid"
                 f" AND {x}.resource_type = {source} AND {x}.code = {code}"
                 f" AND {x}.target_type = {target}"
                 f" WHERE {r2}.resource_type = {source} AND NOT {r2}.deleted AND {inner})")
        if alias == "r":
            # That is O(matches): when one patient in ten has a matching Condition, the engine
            # walks patients in rid order testing each instead (found by a sample of the walk).
            self.probes.append(Probe(found, self._has_per_row(
                source_type, alias, rest, value, source, code, target), None))
        return found

    def _has_per_row(self, source_type: str, alias: str, rest: str, value: str, source: str,
                     code: str, target: str) -> str:
        """`_has` for one row of `alias`: does a matching source point at it? Each lookup is
        a subquery of its own (never joined), so PostgreSQL cannot turn it around."""
        x, r2 = self.alias("x"), self.alias("h")
        per_row, self._per_row = self._per_row, True
        try:
            inner = self.parameter(source_type, r2, rest, value)
        finally:
            self._per_row = per_row
        return (f"(SELECT true FROM search_reference {x} JOIN resource {r2} ON {r2}.rid ="
                f" {x}.rid WHERE {x}.resource_type = {source} AND {x}.code = {code}"
                f" AND {x}.target_type = {target} AND {x}.target_id = {alias}.id"
                f" AND {r2}.resource_type = {source} AND NOT {r2}.deleted"
                f" AND (SELECT {inner}) LIMIT 1) IS TRUE")
