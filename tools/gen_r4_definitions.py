#!/usr/bin/env python3
"""Generate ``src/santong/definitions/r4.json`` from the official FHIR R4 (4.0.1) package.

The output is the compact, derived subset of the R4 StructureDefinitions that the server needs
to validate FHIR JSON structurally (http://hl7.org/fhir/R4/json.html) and to answer questions
such as "which elements are in the summary": for every concrete resource, complex datatype and
BackboneElement, its elements by JSON name (choice elements expanded, contentReference
resolved), plus the primitive types with their JSON kind and regex
(http://hl7.org/fhir/R4/datatypes.html).

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


def build_types(sds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
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
                owner["elements"][json_name] = info
    for key, tdef in types.items():
        if not tdef["elements"]:
            raise SystemExit(f"{key}: no elements")
    return types


def generate(package: Path) -> dict[str, Any]:
    sds = base_specializations(package)
    primitives = primitive_info(sds)
    types = build_types(sds)
    known = set(types) | set(primitives) | {"Resource"}
    for key, tdef in types.items():
        for name, info in tdef["elements"].items():
            if info["type"] not in known:
                raise SystemExit(f"{key}.{name}: unknown type {info['type']}")
    resource_types = sorted(k for k, t in types.items() if t["kind"] == "resource")
    return {
        "fhirVersion": "4.0.1",
        "primitives": primitives,
        "resourceTypes": resource_types,
        "types": types,
    }


def write(data: dict[str, Any], output: Path) -> int:
    # One type per line keeps regenerated diffs readable while staying compact.
    opts = orjson.OPT_SORT_KEYS
    lines = ["{"]
    for i, (key, value) in enumerate(sorted(data.items())):
        comma = "," if i < len(data) - 1 else ""
        if key == "types":
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


def check_examples(package: Path) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from santong.validation import validate_resource

    passed = failed = 0
    elapsed = 0.0
    for path in sorted(package.glob("*.json")):
        resource = load_json(path)
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue  # package.json, ig-r4.json manifests
        start = time.perf_counter()
        issues = validate_resource(resource)
        elapsed += time.perf_counter() - start
        if issues:
            failed += 1
            print(f"FAIL {path.name}")
            for issue in issues[:10]:
                print(f"    {issue.code} {issue.expression}: {issue.diagnostics}")
            if len(issues) > 10:
                print(f"    ... {len(issues) - 10} more")
        else:
            passed += 1
    total = passed + failed
    print(f"examples: {passed} passed, {failed} failed of {total} "
          f"({elapsed * 1000:.0f} ms validating)")
    return failed


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
              f"{len(data['primitives'])} primitives")
        if args.check:
            return 1 if check_examples(package) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
