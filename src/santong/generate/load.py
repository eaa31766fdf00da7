"""Loading a generated Dataset into a running FHIR server (used by `make demo`).

`put` mode sends each resource as PUT [type]/[id] (update-as-create: idempotent, so loading the
same seed twice changes nothing but versions); `transaction` mode POSTs the community Bundle
and then one transaction Bundle per patient. Standard library only (urllib and threads).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

from santong.generate.common import Resource
from santong.generate.dataset import Dataset
from santong.generate.output import community_bundle, patient_bundle

FHIR_JSON = "application/fhir+json"


@dataclass
class LoadResult:
    requests: int = 0
    resources: int = 0
    failures: list[str] = field(default_factory=list)


def _send(method: str, url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _run(calls: Iterable[tuple[str, str, bytes, int]], workers: int, result: LoadResult) -> None:
    def one(call: tuple[str, str, bytes, int]) -> None:
        method, url, body, count = call
        status, answer = _send(method, url, body)
        result.requests += 1
        if 200 <= status < 300:
            result.resources += count
        elif len(result.failures) < 20:
            result.failures.append(f"{method} {url}: {status} {answer[:300]!r}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, calls):
            pass


def _puts(base: str, resources: Iterable[Resource]) -> Iterable[tuple[str, str, bytes, int]]:
    for r in resources:
        yield "PUT", f"{base}/{r['resourceType']}/{r['id']}", orjson.dumps(r), 1


def load(dataset: Dataset, base: str, mode: str = "put", workers: int = 8) -> LoadResult:
    base = base.rstrip("/")
    result = LoadResult()
    if mode == "put":
        _run(_puts(base, dataset.shared()), workers, result)
        _run(_puts(base, (r for record in dataset.records() for r in record)), workers, result)
    elif mode == "transaction":
        shared = dataset.shared()
        _run([("POST", base, orjson.dumps(community_bundle(shared)), len(shared))], 1, result)
        if not result.failures:
            _run((("POST", base, orjson.dumps(patient_bundle(record)), len(record))
                  for record in dataset.records()), workers, result)
    else:
        raise ValueError(f"unknown load mode {mode!r}")
    return result
