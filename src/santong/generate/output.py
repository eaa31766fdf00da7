"""Writing a Dataset as NDJSON per resource type or as transaction Bundles.

NDJSON: one file per type (`Patient.ndjson` …), every resource with its id and literal
references (`Organization/<id>`), ready for PUT (update-as-create) or bulk import.

Bundles: `000000-community.json`, a transaction that PUTs the shared resources under their ids,
then one transaction per patient (`000001.json` …) whose entries are POSTed with `urn:uuid:`
fullUrls and refer to each other by those; references to the community stay literal, so the
community bundle must be loaded first. The Patient entry is a conditional create on the
national ID, so a patient is not duplicated when their bundle is sent twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from santong.generate import codes
from santong.generate.common import Resource
from santong.generate.dataset import Dataset


def _rewrite(value: Any, local: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in local:
                out[key] = local[item]
            else:
                out[key] = _rewrite(item, local)
        return out
    if isinstance(value, list):
        return [_rewrite(item, local) for item in value]
    return value


def community_bundle(resources: Iterable[Resource]) -> Resource:
    return {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                   "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                  for r in resources],
    }


def patient_bundle(record: list[Resource]) -> Resource:
    local = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in record}
    entries = []
    for resource in record:
        body = _rewrite({k: v for k, v in resource.items() if k != "id"}, local)
        request: dict[str, str] = {"method": "POST", "url": resource["resourceType"]}
        if resource["resourceType"] == "Patient":
            national = next(i["value"] for i in resource["identifier"]
                            if i["system"] == codes.OID_NATIONAL_ID)
            request["ifNoneExist"] = f"identifier={codes.OID_NATIONAL_ID}|{national}"
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": body,
                        "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _manifest(dataset: Dataset, fmt: str, counts: Counter[str], seconds: float) -> bytes:
    return orjson.dumps({
        "generator": "santong generate", "format": fmt, "patients": dataset.patients,
        "seed": dataset.seed, "asOf": dataset.as_of.isoformat(),
        "resources": sum(counts.values()), "counts": dict(sorted(counts.items())),
        "seconds": round(seconds, 2),
    }, option=orjson.OPT_INDENT_2)


def write_ndjson(dataset: Dataset, out: Path) -> Counter[str]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    files: dict[str, BinaryIO] = {}
    counts: Counter[str] = Counter()
    try:
        for resource in dataset.resources():
            rtype = resource["resourceType"]
            handle = files.get(rtype)
            if handle is None:
                handle = files[rtype] = open(out / f"{rtype}.ndjson", "wb")  # noqa: SIM115
            handle.write(orjson.dumps(resource) + b"\n")
            counts[rtype] += 1
    finally:
        for handle in files.values():
            handle.close()
    (out / "manifest.json").write_bytes(
        _manifest(dataset, "ndjson", counts, time.monotonic() - started))
    return counts


def write_bundles(dataset: Dataset, out: Path) -> Counter[str]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    counts: Counter[str] = Counter(r["resourceType"] for r in dataset.shared())
    (out / "000000-community.json").write_bytes(orjson.dumps(community_bundle(dataset.shared())))
    width = max(6, len(str(dataset.patients)))
    for index, record in enumerate(dataset.records(), start=1):
        counts.update(r["resourceType"] for r in record)
        (out / f"{index:0{width}d}.json").write_bytes(orjson.dumps(patient_bundle(record)))
    (out / "manifest.json").write_bytes(
        _manifest(dataset, "bundles", counts, time.monotonic() - started))
    return counts
