"""`santong load`: bulk loading of Bundles, resources and NDJSON files.

Transaction and batch Bundles are sent as they are (http://hl7.org/fhir/R4/http.html#transaction);
collection Bundles, single resources and NDJSON lines (one resource per line, as in
http://hl7.org/fhir/uv/bulkdata/) are grouped into batch Bundles. Any of them may be gzipped
(`.ndjson.gz`, `.json.gz`). Everything goes through the
FHIR interactions, either of a running server (`--url`) or of the database directly (the same
Router in this process), several Bundles at a time.

Re-running a load does not duplicate anything: a POST of a resource that has an id becomes a
PUT of that id (client ids), and one that has no id but an identifier becomes a conditional
create on it (`ifNoneExist`). `--as-is` sends the files unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tqdm import tqdm

from santong.fhir import jsonio

FHIR_JSON = "application/fhir+json"
_HEADERS = {"content-type": FHIR_JSON, "accept": FHIR_JSON, "prefer": "return=minimal"}
# A transaction that lost a race (deadlock, serialisation failure) is retried this often.
_RETRIES = 3

Send = Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]


@dataclass
class Unit:
    """One Bundle to send, and where each of its entries came from (for error reports)."""

    source: str
    bundle: dict[str, Any]
    origins: list[str]


@dataclass
class Summary:
    files: int = 0
    resources: int = 0
    failures: list[str] = field(default_factory=list)


_KINDS = (".json", ".ndjson")


def _kind(path: Path) -> str:
    """.json or .ndjson, looking through a .gz (bulk data exports are often compressed)."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def find_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) in _KINDS)
        else:
            yield path


def idempotent_entry(resource: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The request for a resource that a re-run will not duplicate."""
    if request.get("method") != "POST" or request.get("ifNoneExist"):
        return request
    resource_type, id = resource.get("resourceType"), resource.get("id")
    if isinstance(id, str) and id:
        return {**request, "method": "PUT", "url": f"{resource_type}/{id}"}
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            token = f"{identifier['system']}|{identifier['value']}"
            return {**request, "ifNoneExist": f"identifier={quote(token, safe='|:/')}"}
    return request


def _entry(resource: dict[str, Any], as_is: bool) -> dict[str, Any]:
    request = {"method": "POST", "url": str(resource.get("resourceType"))}
    return {"resource": resource, "request": request if as_is else idempotent_entry(
        resource, request)}


def _batches(source: str, items: list[tuple[str, dict[str, Any]]], size: int,
             as_is: bool) -> Iterator[Unit]:
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        yield Unit(source, {"resourceType": "Bundle", "type": "batch",
                            "entry": [_entry(resource, as_is) for _, resource in chunk]},
                   [origin for origin, _ in chunk])


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def count_entries(path: Path) -> int:
    """How many resources (entries, lines) loading `path` goes through: its share of the
    progress bar's total. An unreadable file counts one, for its one failure."""
    try:
        data = _read(path)
        if _kind(path) == ".ndjson":
            return sum(1 for line in data.splitlines() if line.strip())
        resource = jsonio.loads(data)
    except (OSError, EOFError, ValueError):
        return 1
    if isinstance(resource, dict) and resource.get("resourceType") == "Bundle" and \
            resource.get("type") in ("transaction", "batch", "collection"):
        entries = resource.get("entry")
        if not isinstance(entries, list):
            return 0
        if resource["type"] != "collection":
            return len(entries)
        return sum(1 for e in entries if isinstance(e, dict) and isinstance(e.get("resource"),
                                                                             dict))
    return 1


def read_units(path: Path, batch_size: int, as_is: bool,
               failures: list[str]) -> Iterator[Unit]:
    """The Bundles to send for one file; unreadable files and lines go to `failures`."""
    source = str(path)
    try:
        data = _read(path)
    except OSError as exc:  # gzip.BadGzipFile and EOFError too: a damaged archive
        failures.append(f"{source}: cannot read: {exc.strerror or exc}")
        return
    except EOFError:
        failures.append(f"{source}: cannot read: the compressed file is truncated")
        return
    if _kind(path) == ".ndjson":
        items: list[tuple[str, dict[str, Any]]] = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                resource = jsonio.loads(line)
            except ValueError as exc:
                failures.append(f"{source}:{number}: not valid JSON: {exc}")
                continue
            if not isinstance(resource, dict) or "resourceType" not in resource:
                failures.append(f"{source}:{number}: not a FHIR resource")
                continue
            items.append((f"{source}:{number}", resource))
        yield from _batches(source, items, batch_size, as_is)
        return
    try:
        resource = jsonio.loads(data)
    except ValueError as exc:
        failures.append(f"{source}: not valid JSON: {exc}")
        return
    if not isinstance(resource, dict) or "resourceType" not in resource:
        failures.append(f"{source}: not a FHIR resource")
        return
    if resource["resourceType"] == "Bundle" and resource.get("type") in ("transaction", "batch"):
        entries = resource.get("entry") or []
        if not as_is:
            for entry in entries:
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict) \
                        and isinstance(entry.get("request"), dict):
                    entry["request"] = idempotent_entry(entry["resource"], entry["request"])
        yield Unit(source, resource, [f"{source} entry[{i}]" for i in range(len(entries))])
    elif resource["resourceType"] == "Bundle" and resource.get("type") == "collection":
        items = [(f"{source} entry[{i}]", e["resource"])
                 for i, e in enumerate(resource.get("entry") or [])
                 if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        yield from _batches(source, items, batch_size, as_is)
    else:
        yield from _batches(source, [(source, resource)], batch_size, as_is)


def _diagnostics(outcome: Any) -> str:
    if isinstance(outcome, dict):
        issues = outcome.get("issue") or []
        text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues)
        if text:
            return text
    return "failed"


async def send_unit(send: Send, unit: Unit) -> tuple[int, list[str]]:
    """Send one Bundle; the number of resources written and the failures to report (one for
    the whole Bundle when it fails as a whole)."""
    for attempt in range(_RETRIES + 1):
        status, answer = await send(unit.bundle)
        if status not in (409, 503) or attempt == _RETRIES:
            break
        await asyncio.sleep(0.2 * (attempt + 1))  # a lost race or a busy database: retry
    if status != 200 or not isinstance(answer, dict):
        return 0, [f"{unit.source}: HTTP {status}: {_diagnostics(answer)}"]
    failures: list[str] = []
    loaded = 0
    for origin, entry in zip(unit.origins, answer.get("entry") or [], strict=False):
        response = entry.get("response") or {}
        code = str(response.get("status", "")).split(" ")[0]
        if code.startswith("2"):
            loaded += 1
        else:
            failures.append(f"{origin}: {response.get('status')}: "
                            f"{_diagnostics(response.get('outcome'))}")
    return loaded, failures


@asynccontextmanager
async def http_sender(url: str) -> AsyncIterator[Send]:
    import httpx

    # A connection per Bundle: kept-alive connections stay with the server process that
    # accepted them, and a few of them can all land on one of its processes, leaving the
    # others idle; a new one goes to a process that is free to accept. A Bundle of hundreds
    # of entries dwarfs the cost of connecting.
    async with httpx.AsyncClient(base_url=url.rstrip("/") + "/", timeout=600,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        async def send(bundle: dict[str, Any]) -> tuple[int, Any]:
            try:
                response = await client.post("", content=jsonio.dumps(bundle), headers=_HEADERS)
            except httpx.HTTPError as exc:
                return 0, {"issue": [{"diagnostics": f"cannot reach {url}: {exc}"}]}
            try:
                return response.status_code, response.json()
            except ValueError:
                return response.status_code, None
        yield send


@asynccontextmanager
async def database_sender(database_url: str, pool_size: int) -> AsyncIterator[Send]:
    from santong.fhir.request import FhirRequest
    from santong.fhir.router import Router
    from santong.settings import Settings
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    settings = Settings()
    engine = create_engine(database_url, pool_size=pool_size)
    router = Router(Repository(engine), settings)
    base = (settings.public_base_url or "http://localhost/fhir").rstrip("/")
    try:
        async def send(bundle: dict[str, Any]) -> tuple[int, Any]:
            request = FhirRequest("POST", "", headers=_HEADERS, base_url=base, resource=bundle)
            response = await router.handle(request)
            return response.status, response.resource
        yield send
    finally:
        await engine.dispose()


async def load(paths: list[Path], sender: AbstractAsyncContextManager[Send], *,
               workers: int = 4, batch_size: int = 500, as_is: bool = False,
               progress: bool | None = None) -> Summary:
    """Load every file under `paths`; `progress` None shows the bar only on a terminal.

    The bar counts resources gone through (loaded or failed), with the rate and the errors;
    its total comes from a first read of the files in a thread, so loading starts at once.
    """
    summary = Summary()
    queue: asyncio.Queue[Unit | None] = asyncio.Queue(maxsize=workers * 2)
    bar = tqdm(unit=" resources", dynamic_ncols=True, file=sys.stderr,
               disable=None if progress is None else not progress, postfix={"errors": 0})
    files = list(find_files(paths))

    def set_total(counted: asyncio.Future[int]) -> None:
        if not counted.cancelled() and counted.exception() is None:
            bar.total = counted.result()
            bar.refresh()

    counting: asyncio.Future[int] | None = None
    if not bar.disable:
        counting = asyncio.ensure_future(asyncio.to_thread(
            lambda: sum(count_entries(path) for path in files)))
        counting.add_done_callback(set_total)

    def report(loaded: int, failures: list[str], done: int) -> None:
        summary.resources += loaded
        summary.failures.extend(failures)
        bar.update(done)
        bar.set_postfix(errors=len(summary.failures), refresh=False)

    async with sender as send:
        async def work() -> None:
            while (unit := await queue.get()) is not None:
                loaded, failures = await send_unit(send, unit)
                report(loaded, failures, len(unit.origins))

        tasks = [asyncio.create_task(work()) for _ in range(workers)]
        for path in files:
            summary.files += 1
            unreadable: list[str] = []
            for unit in read_units(path, batch_size, as_is, unreadable):
                await queue.put(unit)
            report(0, unreadable, len(unreadable))
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    if counting is not None:  # a file the count could not read only leaves the bar open-ended
        await asyncio.gather(counting, return_exceptions=True)
    bar.close()
    return summary


def run(paths: list[Path], sender: AbstractAsyncContextManager[Send], **options: Any) -> int:
    """Load, print the summary and every failure; the exit status (1 if anything failed)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"santong: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    summary = asyncio.run(load(paths, sender, **options))
    elapsed = max(time.monotonic() - started, 1e-9)
    print(f"santong: loaded {summary.resources} resources from {summary.files} files in "
          f"{elapsed:.1f} s ({summary.resources / elapsed:.0f} resources/s); "
          f"{len(summary.failures)} failed")
    for failure in summary.failures:
        print(f"santong: failed: {failure}", file=sys.stderr)
    return 1 if summary.failures else 0
