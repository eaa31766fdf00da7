#!/usr/bin/env python3
"""Generate ``src/santong/definitions/search_parameters.json`` from the official R4 package.

The output lists, for every base resource type (``Resource`` and ``DomainResource`` for the
parameters common to all types) and every parameter code, the SearchParameter's type, url,
FHIRPath expression *restricted to that base*, xpathUsage, target types, modifiers, comparators,
multipleOr/multipleAnd and composite components
(http://hl7.org/fhir/R4/searchparameter.html, http://hl7.org/fhir/R4/search.html).

Shared parameters such as ``clinical-patient`` have one expression for many bases joined by
``|`` (``AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | ...``); it
is split on the top-level ``|`` and each base keeps the parts that start with its own name.

Usage::

    python tools/gen_r4_search_parameters.py [--package DIR] [--check]

Without ``--package`` the package is fetched with ``npm pack hl7.fhir.r4.examples@4.0.1`` into
a temporary directory. ``--check`` then evaluates every parameter on every example resource of
its type in the package (Bundle entries included) with the compiled extractors of
``santong.search.extract`` and with fhirpathpy, and reports the differences and how many
expressions are compiled or fall back to fhirpathpy.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "src"))

from gen_r4_definitions import fetch_package, load_json  # noqa: E402

OUTPUT = ROOT / "src" / "santong" / "definitions" / "search_parameters.json"
R4_DEFINITIONS = ROOT / "src" / "santong" / "definitions" / "r4.json"
SP_PREFIX = "http://hl7.org/fhir/SearchParameter/"
ABSTRACT_BASES = ("Resource", "DomainResource")

# Not part of the R4 search parameter registry although the package ships them:
# - ids starting with "example" are the examples of the SearchParameter resource itself
#   (http://hl7.org/fhir/R4/searchparameter-examples.html), e.g. a second Condition `subject`;
# - "*-extensions-*" are drafts of the extension packs; most have no expression and the others
#   point at extension urls that do not exist (`patient-extensions-Patient-mothersMaidenName`).
EXCLUDED = re.compile(r"^example|-extensions-")

def generate(package: Path) -> tuple[dict[str, Any], list[str]]:
    from santong.search.parameters import restrict_expression

    resource_types = frozenset(load_json(R4_DEFINITIONS)["resourceTypes"])
    resources: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for path in sorted(package.glob("SearchParameter-*.json")):
        sp = load_json(path)
        if EXCLUDED.search(sp["id"]):
            continue
        bases = sp["base"]
        composite = sp["type"] == "composite"
        expressions: dict[str, str] = {}
        if sp.get("expression"):
            expressions, problems = restrict_expression(sp["expression"], bases, composite)
            warnings.extend(f"{sp['id']}: {p}" for p in problems)
        for base in bases:
            if base not in resource_types and base not in ABSTRACT_BASES:
                warnings.append(f"{sp['id']}: unknown base {base}")
                continue
            entry: dict[str, Any] = {"type": sp["type"], "url": sp["url"]}
            if len(bases) > 1:
                entry["base"] = bases
            if base in expressions:
                entry["expression"] = expressions[base]
            if "xpathUsage" in sp:
                entry["xpathUsage"] = sp["xpathUsage"]
            for key in ("target", "modifier", "comparator"):
                if sp.get(key):
                    entry[key] = sp[key]
            for key in ("multipleOr", "multipleAnd"):
                if key in sp:
                    entry[key] = sp[key]
            if composite:
                entry["component"] = [
                    [c["definition"], c["expression"]] for c in sp.get("component", ())
                ]
            codes = resources.setdefault(base, {})
            if sp["code"] in codes:
                warnings.append(f"{sp['id']}: duplicate code {sp['code']} on {base}")
                continue
            codes[sp["code"]] = entry
    data = {"fhirVersion": "4.0.1", "resources": resources}
    return data, warnings


def write(data: dict[str, Any], output: Path) -> int:
    """One line per base resource type: compact, sorted and diff-friendly."""
    opts = orjson.OPT_SORT_KEYS
    lines = ["{", f'"fhirVersion":{orjson.dumps(data["fhirVersion"]).decode()},', '"resources":{']
    items = sorted(data["resources"].items())
    for i, (base, codes) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f'"{base}":' + orjson.dumps(codes, option=opts).decode() + comma)
    lines.append("}}")
    text = "\n".join(lines) + "\n"
    orjson.loads(text)  # sanity: the hand-assembled document must parse
    output.write_text(text, encoding="utf-8")
    return len(text.encode())


def _examples(package: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every resource in the package, and the resources inside Bundle entries."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(package.glob("*.json")):
        resource = load_json(path)
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue  # package.json, .index.json
        found.append((path.name, resource))
        if resource["resourceType"] == "Bundle":
            for n, entry in enumerate(resource.get("entry", ())):
                inner = entry.get("resource")
                if isinstance(inner, dict) and "resourceType" in inner:
                    found.append((f"{path.name}#entry[{n}]", inner))
    return found


def _canonical(values: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values)


def check(package: Path) -> int:
    from santong.search import extract, parameters

    examples = _examples(package)
    compiled: set[tuple[str, str]] = set()
    fallback: dict[tuple[str, str], str] = {}
    no_expression: set[tuple[str, str]] = set()
    total_params: set[tuple[str, str]] = set()
    for rtype in sorted({r["resourceType"] for _, r in examples} | parameters.resource_types()):
        for code, param in parameters.parameters_for(rtype).items():
            total_params.add((rtype, code))
            exprs = [param.expression, *(e for _, e in param.components)]
            if param.expression is None:
                no_expression.add((rtype, code))
                continue
            for expr in exprs:
                reason = extract.fallback_reason(rtype, expr)
                if reason is None:
                    compiled.add((rtype, expr))
                else:
                    fallback[(rtype, expr)] = reason

    mismatches: Counter[str] = Counter()
    evaluations = errors = values = 0
    shown = 0
    t_compiled = t_reference = 0.0
    for name, resource in examples:
        rtype = resource["resourceType"]
        for code, param in parameters.parameters_for(rtype).items():
            if param.expression is None:
                continue
            evaluations += 1
            start = time.perf_counter()
            got = extract.extract(resource, param)
            middle = time.perf_counter()
            try:
                want = extract.reference_evaluate(resource, param.expression)
            except Exception as exc:  # fhirpathpy raises plain Exception
                errors += 1
                print(f"fhirpathpy error {name} {rtype}.{code}: {exc}")
                continue
            t_compiled += middle - start
            t_reference += time.perf_counter() - middle
            values += len(got)
            problems = []
            if _canonical([n.value for n in got]) != _canonical(want):
                problems.append(("", [n.value for n in got], want))
            if param.components:
                for node in got:
                    for _, expr in param.components:
                        mine = extract.evaluate_relative(rtype, expr, node, resource)
                        theirs = extract.reference_evaluate(node.value, expr, resource, node.type)
                        if _canonical([n.value for n in mine]) != _canonical(theirs):
                            problems.append((expr, [n.value for n in mine], theirs))
            for expr, mine, theirs in problems:
                mismatches[f"{rtype}.{code}"] += 1
                if shown < 40:
                    shown += 1
                    print(f"MISMATCH {name} {rtype}.{code} {expr}\n    compiled:   "
                          f"{orjson.dumps(mine)[:300].decode()}\n    fhirpathpy: "
                          f"{orjson.dumps(theirs, default=str)[:300].decode()}")

    print(f"parameters: {len(total_params)} (resource type, code) pairs over "
          f"{len(parameters.resource_types())} types, {len(no_expression)} without expression")
    print(f"expressions (per resource type, components included): "
          f"{len(compiled) + len(fallback)}; compiled {len(compiled)}, "
          f"fallback to fhirpathpy {len(fallback)}")
    for (rtype, expr), reason in sorted(fallback.items()):
        print(f"    fallback {rtype}: {expr}  ({reason})")
    print(f"examples: {len(examples)} resources, {evaluations} evaluations, {values} values; "
          f"compiled {t_compiled * 1000:.0f} ms vs fhirpathpy {t_reference * 1000:.0f} ms")
    print(f"mismatches: {sum(mismatches.values())} in {len(mismatches)} parameters; "
          f"fhirpathpy errors: {errors}")
    for key, count in mismatches.most_common():
        print(f"    {key}: {count}")
    return 1 if mismatches else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="extracted package directory")
    parser.add_argument("--check", action="store_true", help="compare with fhirpathpy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or fetch_package(Path(tmp))
        data, warnings = generate(package)
        for warning in warnings:
            print(f"warning: {warning}")
        size = write(data, OUTPUT)
        count = sum(len(codes) for codes in data["resources"].values())
        print(f"wrote {OUTPUT.relative_to(ROOT)}: {size} bytes, {len(data['resources'])} bases, "
              f"{count} (base, code) parameters")
        if args.check:
            return check(package)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
