"""Derive src/santong/definitions/compartments.json from the R4 CompartmentDefinitions.

http://hl7.org/fhir/R4/compartmentdefinition.html — for each compartment (Patient, Encounter,
RelatedPerson, Practitioner, Device): the resource types in it and the search parameters that
link them to the compartment's resource. Source: the official `hl7.fhir.r4.examples` 4.0.1
package (CC0), from `--package DIR` or fetched with `npm pack`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "src/santong/definitions/compartments.json"
NAMES = ("patient", "encounter", "relatedPerson", "practitioner", "device")


def fetch_package(into: Path) -> Path:
    subprocess.run(["npm", "pack", "hl7.fhir.r4.examples@4.0.1", "--silent"], cwd=into,
                   check=True, capture_output=True)
    with tarfile.open(next(into.glob("*.tgz"))) as archive:
        archive.extractall(into, filter="data")
    return into / "package"


def derive(package: Path) -> dict[str, dict[str, list[str]]]:
    compartments: dict[str, dict[str, list[str]]] = {}
    for name in NAMES:
        definition = json.loads((package / f"CompartmentDefinition-{name}.json").read_text())
        members = {
            entry["code"]: sorted(entry["param"])
            for entry in definition.get("resource", [])
            if entry.get("param")
        }
        compartments[definition["code"]] = dict(sorted(members.items()))
    return compartments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--package", type=Path, help="an extracted hl7.fhir.r4.examples package")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        package = args.package or fetch_package(Path(scratch))
        data = derive(package)
    OUTPUT.write_text(json.dumps(data, indent=0, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {OUTPUT} ({', '.join(f'{k}: {len(v)} types' for k, v in data.items())})")


if __name__ == "__main__":
    main()
