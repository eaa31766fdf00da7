#!/usr/bin/env python3
"""Generate ``src/santong/definitions/r4.json`` from the official FHIR R4 (4.0.1) package.

The output is the compact, derived subset of the R4 StructureDefinitions that the server needs
to validate FHIR JSON structurally (http://hl7.org/fhir/R4/json.html) and to answer questions
such as "which elements are in the summary": for every concrete resource, complex datatype and
BackboneElement, its elements by JSON name (choice elements expanded, contentReference
resolved), plus the primitive types with their JSON kind and regex
(http://hl7.org/fhir/R4/datatypes.html), and the codes of the ValueSets that `required` bindings
of coded elements name (``code``, ``Coding``, ``CodeableConcept``;
http://hl7.org/fhir/R4/terminologies.html#required) when the package alone enumerates them:
ValueSets drawing on external terminologies (MIME types, UCUM, currencies, …) are left out.
It also keeps the invariants (``constraint``) of the base definitions
(http://hl7.org/fhir/R4/conformance-rules.html#constraints) by the structure they apply to:
``[key, severity, element, expression, human]`` with element "" for the structure itself, else
the JSON name of the element whose values they test; those of DomainResource once, under its
name; ``ele-1`` (every element has a value or children) is left out: the structural validator
enforces it.

Usage::

    python tools/gen_r4_definitions.py [--package DIR] [--check]

Without ``--package`` the package is fetched with ``npm pack hl7.fhir.r4.examples@4.0.1`` into
a temporary directory. ``--check`` then validates every example resource in the package with
``santong.validation`` and reports the failures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

PACKAGE_SPEC = "hl7.fhir.r4.examples@4.0.1"
ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "src" / "santong" / "definitions" / "r4.json"

SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
EXT_FHIR_TYPE = SD_PREFIX + "structuredefinition-fhir-type"
EXT_REGEX = SD_PREFIX + "regex"

# Type codes whose children are declared inline in the same StructureDefinition.
NESTED_TYPES = frozenset({"BackboneElement", "Element"})

# Coded types a required binding is checked on (by code alone for `code`, by system and code for
# the others).
CODED_TYPES = frozenset({"code", "Coding", "CodeableConcept"})

# Numeric ranges come from the prose of http://hl7.org/fhir/R4/datatypes.html (32-bit signed
# integers); the regexes alone do not bound them.
INT32_MIN, INT32_MAX = -2_147_483_648, 2_147_483_647
INTEGER_RANGES = {
    "integer": (INT32_MIN, INT32_MAX),
    "positiveInt": (1, INT32_MAX),
    "unsignedInt": (0, INT32_MAX),
}


def fetch_package(workdir: Path) -> Path:
    """Run ``npm pack`` into *workdir* and extract the tarball; return the package directory."""
    out = subprocess.run(
        ["npm", "pack", PACKAGE_SPEC, "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip().splitlines()[-1]
    with tarfile.open(workdir / out) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package"


def load_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def base_specializations(package: Path) -> dict[str, dict[str, Any]]:
    """Core StructureDefinitions that define a type (not profiles, not logical models)."""
    result: dict[str, dict[str, Any]] = {}
    for path in sorted(package.glob("StructureDefinition-*.json")):
        sd = load_json(path)
        if sd.get("kind") not in ("primitive-type", "complex-type", "resource"):
            continue
        if not sd["url"].startswith(SD_PREFIX):
            continue
        # Element and Resource have no baseDefinition and no derivation.
        if sd.get("derivation", "specialization") != "specialization":
            continue
        result[sd["type"]] = sd
    return result


def type_extension(type_ref: dict[str, Any], url: str) -> str | None:
    for ext in type_ref.get("extension", ()):
        if ext["url"] == url:
            return ext.get("valueUrl") or ext.get("valueString")
    return None


def primitive_info(sds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    primitives: dict[str, dict[str, Any]] = {}
    for name, sd in sds.items():
        if sd["kind"] != "primitive-type":
            continue
        # The JSON representation follows the root of the derivation chain
        # (positiveInt -> integer -> number, code -> string -> string).
        root = name
        while True:
            base = sds[root]["baseDefinition"].removeprefix(SD_PREFIX)
            if base == "Element":
                break
            root = base
        json_kind = {"boolean": "boolean", "integer": "number", "decimal": "number"}.get(
            root, "string"
        )
        info: dict[str, Any] = {"json": json_kind}
        value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
        regex = next(
            (r for t in value.get("type", ()) if (r := type_extension(t, EXT_REGEX))), None
        )
        if regex is not None:
            info["regex"] = regex
        if "maxLength" in value:
            info["maxLength"] = value["maxLength"]
        if name in INTEGER_RANGES:
            info["minValue"], info["maxValue"] = INTEGER_RANGES[name]
        primitives[name] = info
    return primitives


def element_type_codes(element: dict[str, Any], owner_kind: str, key: str) -> list[str]:
    codes: list[str] = []
    for type_ref in element.get("type", ()):
        code = type_ref["code"]
        if code.startswith("http://hl7.org/fhirpath/System."):
            # R4 snapshots describe id/url as FHIRPath system types; the extension names the FHIR
            # type. Resource.id is documented as type `id` (http://hl7.org/fhir/R4/resource.html)
            # although the snapshot extension says `string`.
            if owner_kind == "resource" and key == "id":
                code = "id"
            else:
                code = type_extension(type_ref, EXT_FHIR_TYPE) or "string"
        codes.append(code)
    return codes


def json_names(key: str, codes: list[str]) -> Iterator[tuple[str, str, str | None]]:
    """Yield (JSON name, type code, choice group) for an element's last path segment."""
    if key.endswith("[x]"):
        group = key[:-3]
        for code in codes:
            yield group + code[0].upper() + code[1:], code, group
    else:
        yield key, codes[0], None


def by_url(package: Path, resource_type: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(package.glob(f"{resource_type}-*.json")):
        resource = load_json(path)
        if resource.get("resourceType") == resource_type and isinstance(resource.get("url"), str):
            found[resource["url"]] = resource
    return found


class ValueSets:
    """The package's ValueSets, expanded on demand: url -> {system: sorted codes}, or None."""

    def __init__(self, package: Path) -> None:
        sys.path.insert(0, str(ROOT / "src"))
        from santong.validation.valuesets import Undecidable, expand

        self._expand, self._undecidable = expand, Undecidable
        self.value_sets = by_url(package, "ValueSet")
        self.code_systems = by_url(package, "CodeSystem")
        self.expanded: dict[str, dict[str, list[str]] | None] = {}

    def codes(self, url: str) -> dict[str, list[str]] | None:
        if url not in self.expanded:
            self.expanded[url] = self._codes(url)
        return self.expanded[url]

    def _codes(self, url: str) -> dict[str, list[str]] | None:
        value_set = self.value_sets.get(url)
        if value_set is None:
            return None  # e.g. a LOINC answer list: not in the package
        try:
            codes = self._expand(value_set, lambda u: self.value_sets.get(u.split("|")[0]),
                                 lambda u: self.code_systems.get(u.split("|")[0]))
        except self._undecidable:
            return None
        if codes.systems or not codes.pairs:
            return None  # a whole external system (urn:ietf:bcp:13, UCUM, ISO 4217…)
        out: dict[str, set[str]] = {}
        for system, code in codes.pairs:
            out.setdefault(system or "", set()).add(code)
        return {system: sorted(c) for system, c in sorted(out.items())}


def required_binding(element: dict[str, Any], codes: list[str],
                     value_sets: ValueSets) -> str | None:
    """The ValueSet url of a required binding checked on this element, else None."""
    binding = element.get("binding") or {}
    url = binding.get("valueSet")
    if binding.get("strength") != "required" or not isinstance(url, str):
        return None
    if not codes or not set(codes) <= CODED_TYPES:
        return None
    url = url.split("|")[0]
    return url if value_sets.codes(url) is not None else None


def build_types(sds: dict[str, dict[str, Any]],
                value_sets: ValueSets) -> dict[str, dict[str, Any]]:
    types: dict[str, dict[str, Any]] = {}
    for name, sd in sds.items():
        kind = sd["kind"]
        # Element is abstract but describes the `_name` siblings of primitives (id, extension).
        if kind == "primitive-type" or (sd.get("abstract") and name != "Element"):
            continue
        elements = sd["snapshot"]["element"]
        types[name] = {"kind": kind, "elements": {}}
        for element in elements[1:]:
            path: str = element["path"]
            if element.get("max") == "0":
                continue
            parent, _, key = path.rpartition(".")
            owner = types[parent]
            codes = element_type_codes(element, owner["kind"], key)
            if "contentReference" in element:
                # "#Questionnaire.item": the element reuses that backbone's definition.
                codes = [element["contentReference"].removeprefix("#")]
            elif len(codes) == 1 and codes[0] in NESTED_TYPES:
                # Inline structure: its children follow and are keyed by this path.
                codes = [path]
                types[path] = {"kind": "backbone", "elements": {}}
            if not codes:
                raise SystemExit(f"{path}: element without a type")
            bound = required_binding(element, codes, value_sets)
            for json_name, code, group in json_names(key, codes):
                info: dict[str, Any] = {"type": code}
                if element["max"] != "1":
                    info["array"] = True
                if element.get("min", 0):
                    info["min"] = element["min"]
                if element.get("isSummary"):
                    info["summary"] = True
                if element.get("isModifier"):
                    info["modifier"] = True
                if group is not None:
                    info["choice"] = group
                if bound is not None:
                    info["binding"] = bound
                owner["elements"][json_name] = info
    for key, tdef in types.items():
        if not tdef["elements"]:
            raise SystemExit(f"{key}: no elements")
    return types


EXT_BEST_PRACTICE = SD_PREFIX + "elementdefinition-bestpractice"
# Invariants every element repeats and the structural validator already enforces.
SKIPPED_CONSTRAINTS = frozenset({"ele-1"})


def build_constraints(sds: dict[str, dict[str, Any]],
                      types: dict[str, dict[str, Any]]) -> dict[str, list[list[str]]]:
    """Each structure's invariants: [key, severity, element, expression, human]."""
    out: dict[str, list[list[str]]] = {}
    for name, sd in sds.items():
        if sd["kind"] == "primitive-type":
            continue  # their invariants are about the value element, checked by the regexes
        for element in sd["snapshot"]["element"]:
            path: str = element["path"]
            for constraint in element.get("constraint", ()):
                key, source = constraint["key"], constraint.get("source") or sd["url"]
                if key in SKIPPED_CONSTRAINTS or "expression" not in constraint:
                    continue
                if source != sd["url"]:
                    parent = sds.get(source.removeprefix(SD_PREFIX))
                    # Those of DomainResource are kept once, under it; ext-1 is the Extension's
                    # own, which every `extension` element repeats. Others are copied (qty-3 of
                    # Quantity into Age, Count, Distance and Duration).
                    if parent is None or parent.get("abstract") or key == "ext-1":
                        continue
                if path == name or path in types:
                    owner, on = path, ""
                else:  # a primitive or datatype element, or a contentReference
                    owner, _, on = path.rpartition(".")
                    if key == "ext-1":
                        continue  # Extension.extension repeats the Extension's own
                severity = constraint["severity"]
                if any(e["url"] == EXT_BEST_PRACTICE and e.get("valueBoolean")
                       for e in constraint.get("extension", ())):
                    severity = "best-practice"
                entry = [key, severity, on, constraint["expression"],
                         constraint.get("human", "")]
                if entry not in out.setdefault(owner, []):
                    out[owner].append(entry)
    return {owner: sorted(entries) for owner, entries in sorted(out.items())}


def generate(package: Path) -> dict[str, Any]:
    sds = base_specializations(package)
    primitives = primitive_info(sds)
    value_sets = ValueSets(package)
    types = build_types(sds, value_sets)
    known = set(types) | set(primitives) | {"Resource"}
    for key, tdef in types.items():
        for name, info in tdef["elements"].items():
            if info["type"] not in known:
                raise SystemExit(f"{key}.{name}: unknown type {info['type']}")
    resource_types = sorted(k for k, t in types.items() if t["kind"] == "resource")
    bound = sorted({info["binding"] for tdef in types.values()
                    for info in tdef["elements"].values() if "binding" in info})
    return {
        "constraints": build_constraints(sds, types),
        "fhirVersion": "4.0.1",
        "primitives": primitives,
        "resourceTypes": resource_types,
        "types": types,
        "valueSets": {url: value_sets.codes(url) for url in bound},
    }


def write(data: dict[str, Any], output: Path) -> int:
    # One type per line keeps regenerated diffs readable while staying compact.
    opts = orjson.OPT_SORT_KEYS
    lines = ["{"]
    for i, (key, value) in enumerate(sorted(data.items())):
        comma = "," if i < len(data) - 1 else ""
        if key in ("constraints", "types", "valueSets"):
            lines.append(f'"{key}":{{')
            for j, (tname, tdef) in enumerate(sorted(value.items())):
                tcomma = "," if j < len(value) - 1 else ""
                lines.append(orjson.dumps(tname).decode() + ":" + orjson.dumps(tdef, option=opts)
                             .decode() + tcomma)
            lines.append("}" + comma)
        else:
            lines.append(f'"{key}":' + orjson.dumps(value, option=opts).decode() + comma)
    lines.append("}")
    text = "\n".join(lines) + "\n"
    orjson.loads(text)  # sanity: the hand-assembled document must parse
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return len(text.encode())


# Official examples that break the R4 rules themselves; --check and the tests expect exactly
# these to fail (file name -> why).
_EXTENSION_SEARCH_DRAFT = "a draft search parameter of an extension pack without the mandatory base"
KNOWN_INVALID: dict[str, str] = {
    "ImplementationGuide-fhir.json": "lacks the mandatory name and status",
    "ig-r4.json": "the package's own ImplementationGuide: lacks the mandatory name and status",
    "Questionnaire-qs1.json": "its nested items lack the mandatory linkId",
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json":
        "its id is longer than the 64 characters an id may have",
    **{f"SearchParameter-{kind}-extensions-{kind_type}-{code}.json": _EXTENSION_SEARCH_DRAFT
       for kind, kind_type in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
       for code in ("author", "effective", "end", "keyword", "workflow")},
    "Bundle-dataelements.json": "bdl-7: fullUrls repeat without versions (de-Quantity.value "
                                "and others, once per Quantity profile)",
    # The workflow patterns: logical models that are neither abstract nor based on anything.
    **{f"StructureDefinition-{name}.json": "sdf-4: not abstract, yet no baseDefinition"
       for name in ("Definition", "Event", "FiveWs", "Request")},
}


def example_files(package: Path) -> list[Path]:
    """The package's resources as files (package.json and the index are not resources)."""
    return [path for path in sorted(package.glob("*.json"))
            if path.name not in ("package.json", ".index.json")]


def check_examples(package: Path) -> int:
    """Validate every resource of the package; the number of unexpected results."""
    sys.path.insert(0, str(ROOT / "src"))
    from santong.validation import validate_resource

    passed = failed = unexpected = 0
    elapsed = 0.0
    for path in example_files(package):
        resource = load_json(path)
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        start = time.perf_counter()
        issues = [i for i in validate_resource(resource, invariants="all")
                  if i.severity in ("error", "fatal")]
        elapsed += time.perf_counter() - start
        known = KNOWN_INVALID.get(path.name)
        if issues:
            failed += 1
            if known is not None:
                print(f"known invalid {path.name}: {known}")
                continue
            unexpected += 1
            print(f"FAIL {path.name}")
            for issue in issues[:10]:
                print(f"    {issue.code} {issue.expression}: {issue.diagnostics}")
            if len(issues) > 10:
                print(f"    ... {len(issues) - 10} more")
        else:
            passed += 1
            if known is not None:
                unexpected += 1
                print(f"UNEXPECTEDLY VALID {path.name} (listed as known invalid: {known})")
    total = passed + failed
    print(f"examples: {passed} passed, {failed} failed ({failed - unexpected} known) of {total} "
          f"({elapsed * 1000:.0f} ms validating)")
    return unexpected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="extracted package directory")
    parser.add_argument("--check", action="store_true", help="validate the package examples")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or fetch_package(Path(tmp))
        data = generate(package)
        size = write(data, OUTPUT)
        ntypes = len(data["types"])
        print(f"wrote {OUTPUT.relative_to(ROOT)}: {size} bytes, "
              f"{len(data['resourceTypes'])} resource types, {ntypes} structures, "
              f"{len(data['primitives'])} primitives, "
              f"{len(data['valueSets'])} ValueSets of required bindings")
        if args.check:
            return 1 if check_examples(package) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
