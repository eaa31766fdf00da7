"""Generate the snapshots of the profiles in fhir_profiles/ from their differentials.

    python tools/gen_snapshots.py [--base DIR] [--check] [PACKAGE_DIR]

For each StructureDefinition with `derivation: constraint` in PACKAGE_DIR (default
fhir_profiles/), the snapshot is its base's snapshot with the differential applied, written back
into the file (`--check`: nothing is written; exit 1 and name the files whose committed snapshot
differs). Base definitions come from the R4 core StructureDefinitions with snapshots in DIR
(default: $SANTONG_R4_PACKAGE or /tmp/r4pkg/package, the unpacked hl7.fhir.r4.examples 4.0.1
or hl7.fhir.r4.core 4.0.1 package) and from the package itself (a profile may be based on
another profile of the package).

This is the standard algorithm restricted to the constructs the package uses, and it refuses
anything else instead of guessing:

* a differential element whose id is in the base snapshot is merged into it: cardinality,
  types (with profiles/targetProfiles), binding, fixed[x]/pattern[x], slicing, short,
  definition, comment, mustSupport and the other ElementDefinition properties replace the
  base's; `constraint`, `condition` and `mapping` are added to the base's;
* an element below one whose children the base snapshot does not list (e.g.
  `Patient.identifier.system`) first unfolds that element: the children of its one type's
  snapshot (Identifier, Coding, CodeableConcept, Address, …) are inserted after it with ids and
  paths renamed;
* inherited constraints without a `source` get the URL of the definition they come from;
* a slice (`Patient.identifier:nationalId`) is a copy of its sliced element as the base (not
  this profile) defines it, inserted after the
  sliced element's children and earlier slices; the base element must carry `slicing` (in the
  base or the differential). Its children (`Patient.identifier:nationalId.system`) unfold from
  the sliced element's children when the snapshot already lists them, else from the type;
  `extension`/`modifierExtension` get the implicit slicing by url when the base leaves it out;
* choice elements are constrained as `value[x]` (no type-specific renaming).

The differential must list elements in snapshot order (as the spec requires); ids and paths of
new elements follow the ElementDefinition id rules (`path:sliceName.child`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = ROOT / "fhir_profiles"
DEFAULT_BASE = Path(os.environ.get("SANTONG_R4_PACKAGE", "/tmp/r4pkg/package"))
CORE = "http://hl7.org/fhir/StructureDefinition/"

# Extensions are always sliced by url; resource snapshots leave it implicit (datatypes state it).
EXTENSION_SLICING = {"discriminator": [{"type": "value", "path": "url"}],
                     "description": "Extensions are always sliced by (at least) url",
                     "rules": "open"}

# Properties that accumulate rather than replace (ElementDefinition, §"Snapshot generation").
ADDITIVE = ("constraint", "condition", "mapping")


class SnapshotError(Exception):
    pass


class Definitions:
    """StructureDefinitions by canonical URL: the R4 base package, then the profile package."""

    def __init__(self, base_dir: Path, package_dir: Path) -> None:
        self.by_url: dict[str, dict[str, Any]] = {}
        self.base_dir = base_dir
        self.package = {url: sd for url, sd in _structure_definitions(package_dir).items()}

    def get(self, url: str) -> dict[str, Any]:
        if url in self.package:
            return self.package[url]
        if url not in self.by_url:
            if not url.startswith(CORE):
                raise SnapshotError(f"unknown base definition {url}")
            path = self.base_dir / f"StructureDefinition-{url[len(CORE):]}.json"
            if not path.is_file():
                raise SnapshotError(f"{path} not found: unpack hl7.fhir.r4.core or .examples "
                                    "4.0.1 there, or pass --base")
            self.by_url[url] = json.loads(path.read_text(encoding="utf-8"))
        return self.by_url[url]

    def snapshot_of(self, url: str) -> list[dict[str, Any]]:
        sd = self.get(url)
        if sd.get("derivation") == "constraint" and url in self.package:
            return generate(sd, self)  # a profile on a profile: its snapshot, freshly made
        if "snapshot" not in sd:
            raise SnapshotError(f"{url} has no snapshot")
        return sd["snapshot"]["element"]


def _structure_definitions(directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(directory.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text(encoding="utf-8"))
        out[sd["url"]] = sd
    return out


def _segments(element_id: str) -> list[str]:
    """`Patient.identifier:nationalId.system` → ['Patient', 'identifier:nationalId', 'system']."""
    return element_id.split(".")


def _path_of(element_id: str) -> str:
    return ".".join(seg.split(":", 1)[0] for seg in _segments(element_id))


def _index(snapshot: list[dict[str, Any]], element_id: str) -> int | None:
    for i, element in enumerate(snapshot):
        if element["id"] == element_id:
            return i
    return None


def _descendant_end(snapshot: list[dict[str, Any]], index: int, with_slices: bool) -> int:
    """The index after the last element below snapshot[index] (and after its slices)."""
    element_id = snapshot[index]["id"]
    end = index + 1
    while end < len(snapshot):
        other = snapshot[end]["id"]
        if other.startswith(element_id + ".") or (
                with_slices and other.startswith(element_id + ":")):
            end += 1
        else:
            break
    return end


def _has_children(snapshot: list[dict[str, Any]], element_id: str) -> bool:
    return any(e["id"].startswith(element_id + ".") for e in snapshot)


def _renamed(elements: list[dict[str, Any]], old_id: str, new_id: str, new_path: str
             ) -> list[dict[str, Any]]:
    """Copies of `elements` (all below old_id) re-rooted at new_id / new_path."""
    out = []
    old_path = _path_of(old_id)
    for element in elements:
        copied = copy.deepcopy(element)
        copied["id"] = new_id + element["id"][len(old_id):]
        copied["path"] = new_path + element["path"][len(old_path):]
        out.append(copied)
    return out


def _unfold(snapshot: list[dict[str, Any]], index: int, defs: Definitions,
            originals: dict[str, dict[str, Any]]) -> None:
    """Insert the children of snapshot[index] after it (it has none listed yet)."""
    element = snapshot[index]
    element_id = element["id"]
    segments = _segments(element_id)
    # A slice unfolds like its sliced element when the snapshot lists that element's children.
    if ":" in segments[-1]:
        unsliced = ".".join([*segments[:-1], segments[-1].split(":", 1)[0]])
        start = _index(snapshot, unsliced)
        if start is not None and _has_children(snapshot, unsliced):
            children = snapshot[start + 1:_descendant_end(snapshot, start, False)]
            _insert(snapshot, index + 1, _renamed(children, unsliced, element_id, element["path"]),
                    originals)
            return
    types = {t["code"] for t in element.get("type", [])}
    if len(types) != 1:
        raise SnapshotError(f"cannot unfold {element_id}: it has types {sorted(types)}")
    (code,) = types
    if element.get("contentReference"):
        raise SnapshotError(f"cannot unfold {element_id}: contentReference")
    type_snapshot = defs.snapshot_of(CORE + code)
    children = _with_sources(type_snapshot[1:], CORE + code)
    root = type_snapshot[0]["id"]
    _insert(snapshot, index + 1, _renamed(children, root, element_id, element["path"]), originals)


def _insert(snapshot: list[dict[str, Any]], at: int, elements: list[dict[str, Any]],
            originals: dict[str, dict[str, Any]]) -> None:
    snapshot[at:at] = elements
    for element in elements:
        originals[element["id"]] = copy.deepcopy(element)


def _with_sources(elements: list[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    """Copies of `elements` whose constraints name the definition they come from (`source`)."""
    out = copy.deepcopy(elements)
    for element in out:
        for constraint in element.get("constraint", ()):
            constraint.setdefault("source", url)
    return out


def _locate(snapshot: list[dict[str, Any]], element_id: str, defs: Definitions,
            originals: dict[str, dict[str, Any]]) -> int:
    """The index of element_id in snapshot, creating it (unfolding, slicing) if needed."""
    found = _index(snapshot, element_id)
    if found is not None:
        return found
    segments = _segments(element_id)
    if len(segments) == 1:
        raise SnapshotError(f"{element_id} is not the base's root")
    last = segments[-1]
    parent_id = ".".join(segments[:-1])
    if ":" in last:
        name, slice_name = last.split(":", 1)
        if "/" in slice_name:
            raise SnapshotError(f"{element_id}: re-slicing is not supported")
        sliced_id = f"{parent_id}.{name}" if parent_id else name
        sliced = _locate(snapshot, sliced_id, defs, originals)
        if "slicing" not in snapshot[sliced] and name in ("extension", "modifierExtension"):
            snapshot[sliced]["slicing"] = copy.deepcopy(EXTENSION_SLICING)
        if "slicing" not in snapshot[sliced]:
            raise SnapshotError(f"{element_id}: {sliced_id} is not sliced")
        # A slice starts from the sliced element as the base defines it, not as this profile
        # constrains it (identifier 1..* does not make every identifier slice 1..1).
        template = copy.deepcopy(originals[sliced_id])
        template.pop("slicing", None)
        template["id"] = element_id
        template["sliceName"] = slice_name
        end = _descendant_end(snapshot, sliced, True)
        _insert(snapshot, end, [template], originals)
        return end
    parent = _locate(snapshot, parent_id, defs, originals)
    if not _has_children(snapshot, parent_id):
        _unfold(snapshot, parent, defs, originals)
    found = _index(snapshot, element_id)
    if found is None:
        raise SnapshotError(f"{element_id}: no such element in the base")
    return found


def _merge(target: dict[str, Any], diff: dict[str, Any]) -> None:
    if diff.get("path") is not None and diff["path"] != target["path"]:
        raise SnapshotError(f"{diff['id']}: path {diff['path']} should be {target['path']}")
    for key, value in diff.items():
        if key in ("id", "path"):
            continue
        if key in ADDITIVE:
            existing = target.get(key, [])
            if key == "constraint":
                keys = {c["key"] for c in existing}
                clash = [c["key"] for c in value if c["key"] in keys]
                if clash:
                    raise SnapshotError(f"{diff['id']}: constraint key(s) {clash} already used")
            target[key] = existing + copy.deepcopy(value)
        elif key.startswith(("fixed", "pattern")):
            for other in [k for k in target if k.startswith(("fixed", "pattern"))]:
                del target[other]
            target[key] = copy.deepcopy(value)
        else:
            target[key] = copy.deepcopy(value)
    _check_cardinality(target)


def _check_cardinality(element: dict[str, Any]) -> None:
    low, high = element.get("min", 0), element.get("max", "*")
    if high != "*" and int(high) < low:
        raise SnapshotError(f"{element['id']}: min {low} > max {high}")
    base_max = element.get("base", {}).get("max", "*")
    if base_max != "*" and high == "*":
        raise SnapshotError(f"{element['id']}: max * exceeds the base's {base_max}")
    if base_max != "*" and int(high) > int(base_max):
        raise SnapshotError(f"{element['id']}: max {high} exceeds the base's {base_max}")


def generate(sd: dict[str, Any], defs: Definitions) -> list[dict[str, Any]]:
    """The snapshot of profile `sd` (a constraint on its baseDefinition)."""
    if sd.get("derivation") != "constraint":
        raise SnapshotError(f"{sd['url']}: only constraints are supported")
    snapshot = _with_sources(defs.snapshot_of(sd["baseDefinition"]), sd["baseDefinition"])
    originals = {element["id"]: copy.deepcopy(element) for element in snapshot}
    root_type = snapshot[0]["path"]
    if sd["type"] != root_type:
        raise SnapshotError(f"{sd['url']}: type {sd['type']} but base is {root_type}")
    previous = -1
    for diff in sd["differential"]["element"]:
        element_id = diff.get("id")
        if not element_id or _path_of(element_id) != diff.get("path", _path_of(element_id)):
            raise SnapshotError(f"{sd['url']}: element id {element_id!r} does not match its path")
        index = _locate(snapshot, element_id, defs, originals)
        if index < previous:
            raise SnapshotError(f"{sd['url']}: differential element {element_id} is out of order")
        previous = index
        _merge(snapshot[index], diff)
    return snapshot


def snapshot_for(sd: dict[str, Any], defs: Definitions) -> dict[str, Any]:
    return {"element": generate(sd, defs)}


def _dump(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, indent=2) + "\n"


def with_snapshot(sd: dict[str, Any], defs: Definitions) -> dict[str, Any]:
    """`sd` with its snapshot (placed after the differential, as HL7 packages do)."""
    out = {k: v for k, v in sd.items() if k != "snapshot"}
    out["snapshot"] = snapshot_for(sd, defs)
    return out


def run(package_dir: Path, base_dir: Path, check: bool) -> list[str]:
    """Regenerate (or check) every profile's snapshot; return the stale files."""
    defs = Definitions(base_dir, package_dir)
    stale = []
    for path in sorted(package_dir.glob("StructureDefinition-*.json")):
        text = path.read_text(encoding="utf-8")
        sd = json.loads(text)
        if sd.get("derivation") != "constraint":
            continue
        wanted = _dump(with_snapshot(sd, defs))
        if wanted != text:
            stale.append(path.name)
            if not check:
                path.write_text(wanted, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE,
                        help="directory of R4 core StructureDefinitions with snapshots")
    parser.add_argument("--check", action="store_true",
                        help="only check that the committed snapshots are current")
    args = parser.parse_args(argv)
    try:
        stale = run(args.package, args.base, args.check)
    except SnapshotError as exc:
        print(f"gen_snapshots: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for name in stale:
            print(f"stale snapshot: {name}", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
