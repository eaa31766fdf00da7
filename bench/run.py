"""`make bench`: Santong measured side by side with what this machine can do, in one run.

1. Starts an embedded PostgreSQL (pgserver) in a temporary folder; for each data size
   (`--sizes`, or `--patients`), a database of its own and `santong serve` on it.
2. Sets up a generated community (`santong.generate`): by bulk load (bench/bulkload.py: the
   rows the server's PUT would write, by COPY from several processes; default) or by PUT
   through the server (`--setup put`).
3. Drives each scenario from a separate process (wrk, or bench/pyload.py when wrk is missing):
   create / read by id / update at 1 and 16 clients and transactions at the first size;
   searches at every size (probed: the ones the server cannot do yet are reported as skipped);
   with `--soak`, mixed traffic at the last size while the server's memory is sampled.
4. Measures the limits on the same PostgreSQL with the same load generator and concurrency: a
   bare FastAPI + asyncpg app (bench/bare_app.py), and asyncpg alone (bench/raw_pg.py).
5. Writes report.md and report.json (and PNG charts when matplotlib is installed) under
   bench/results/<date>-<mode>/, stating the machine, versions, data sizes and date.

Usage: python bench/run.py [--quick] [--sizes N,M | --patients N] [--duration S]
       [--soak [--soak-seconds S]] [--setup bulk|put] [--loadgen auto|wrk|python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from statistics import mean
from typing import Any

import orjson
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bulkload  # noqa: E402
import raw_pg  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402

from santong import __version__  # noqa: E402
from santong.generate import Dataset  # noqa: E402
from santong.generate.output import patient_bundle  # noqa: E402
from santong.settings import Settings, worker_count  # noqa: E402
from santong.storage.database import (  # noqa: E402
    asyncpg_connect_args,
    start_embedded_postgres,
)
from santong.validation import validate_resource  # noqa: E402

FHIR_JSON = "application/fhir+json"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Accept": FHIR_JSON, **({"Content-Type": FHIR_JSON} if body else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        return 0, f"no answer: {exc}".encode()


def wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n"
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- process measurements (from /proc: Linux) --------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident) in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn workers when SANTONG_WORKERS > 1)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_memory(pid: int) -> dict[str, Any]:
    """Resident memory of the server's processes: each one's now and peak, and the total now."""
    processes = [{"pid": p, **proc_status(p)} for p in process_tree(pid)]
    processes = [p for p in processes if "VmRSS" in p]
    return {"processes": processes, "rss_kib": sum(p["VmRSS"] for p in processes),
            "peak_kib": max((p.get("VmHWM", 0) for p in processes), default=0)}


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """CPU seconds of process `pid` (user + system): its own, and its reaped children's; None
    when it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live descendants (the server's worker processes)."""
    return sum(times[0] for process in process_tree(pid)
               if (times := cpu_seconds(process)) is not None)


# The processes of a PostgreSQL server by what they do, from their titles
# (`postgres: checkpointer`, `postgres: autovacuum worker santong_10000`, `postgres: postgres
# santong_10000 [local] idle`).
_BACKGROUND = ("checkpointer", "walwriter", "background writer", "autovacuum launcher",
               "logical replication launcher", "archiver", "startup")


def database_cpu_seconds(postmaster: int) -> dict[str, float]:
    """CPU seconds so far of a PostgreSQL server's processes: `backends` (client connections,
    the server's queries), `autovacuum` (its workers, and every process that has exited: the
    postmaster's reaped children, mostly autovacuum workers, which live for one table each)
    and `background` (checkpointer, WAL writer, … and the postmaster itself)."""
    out = {"backends": 0.0, "autovacuum": 0.0, "background": 0.0}
    for process in process_tree(postmaster):
        times = cpu_seconds(process)
        try:
            title = Path(f"/proc/{process}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            times = None
        if times is None:
            continue  # exited since: counted by the postmaster once reaped
        own, reaped = times
        if process == postmaster:
            out["background"] += own
            out["autovacuum"] += reaped
        elif "autovacuum worker" in title:
            out["autovacuum"] += own
        elif title.removeprefix("postgres: ").startswith(_BACKGROUND):
            out["background"] += own
        else:
            out["backends"] += own
    return out


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL server of the data folder `pgdata` (its postmaster.pid)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    return None


def machine_busy() -> tuple[int, int, int]:
    """The machine's busy, total and stolen CPU ticks (/proc/stat: steal is the time the
    hypervisor gave this VM's CPUs to others, one cause of a shared machine's slow phases)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    return sum(values) - idle, sum(values), steal


# ---- load generation ------------------------------------------------------------------------

class LoadGenerator:
    def __init__(self, kind: str) -> None:
        wrk = shutil.which("wrk")
        if kind == "auto":
            kind = "wrk" if wrk else "python"
        if kind == "wrk" and not wrk:
            raise SystemExit("bench: wrk is not installed (apt-get install wrk), "
                             "or use --loadgen python")
        self.kind = kind
        self.database_pid: int | None = None  # the PostgreSQL server's, for its CPU

    def version(self) -> str:
        if self.kind == "wrk":
            out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
            return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0]
        return f"bench/pyload.py (Python {platform.python_version()}, asyncio + uvloop)"

    def command(self, url: str, requests: Path, clients: int, duration: float,
                offset: int = 0) -> list[str]:
        if self.kind == "wrk":
            return ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s",
                    "--timeout", "30s", "-s", str(HERE / "requests.lua"), url, "--",
                    str(requests), str(offset)]
        return [sys.executable, str(HERE / "pyload.py"), "--url", url, "--requests",
                str(requests), "--connections", str(clients), "--duration", str(duration),
                "--offset", str(offset)]

    def run(self, url: str, requests: Path, clients: int, duration: float,
            server_pid: int | None = None, offset: int = 0) -> dict[str, Any]:
        """`offset`: the request of the file to start from (cycling through all of them)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = proc_cpu_seconds(server_pid) if server_pid else 0.0
        database_cpu = database_cpu_seconds(self.database_pid) if self.database_pid else {}
        busy0, total0, steal0 = machine_busy()
        started = time.perf_counter()
        done = subprocess.run(self.command(url, requests, clients, duration, offset),
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        busy1, total1, steal1 = machine_busy()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if self.database_pid:
            database_after = database_cpu_seconds(self.database_pid)
            result_database = {f"database_{kind}_cpu_percent": round(
                100 * (database_after[kind] - database_cpu.get(kind, 0.0)) / elapsed, 1)
                for kind in database_after}
        else:
            result_database = {}
        line = next((x for x in done.stdout.splitlines() if x.startswith("JSON ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"{self.kind} failed ({done.returncode}): "
                               f"{done.stdout[-1500:]} {done.stderr[-1500:]}")
        result: dict[str, Any] = json.loads(line[5:])
        seconds = result["duration_us"] / 1e6
        result["seconds"] = round(seconds, 3)
        result["per_second"] = round(result["requests"] / seconds, 1) if seconds else 0.0
        result["errors"] = sum(result[k] for k in ("connect_errors", "read_errors",
                                                    "write_errors", "status_errors", "timeouts"))
        loadgen_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["loadgen_cpu_percent"] = round(100 * loadgen_cpu / elapsed, 1)
        if server_pid:
            result["server_cpu_percent"] = round(
                100 * (proc_cpu_seconds(server_pid) - server_cpu) / elapsed, 1)
        ncpu = os.cpu_count() or 1
        result["machine_busy_percent"] = round(
            100 * (busy1 - busy0) / max(1, total1 - total0), 1)
        result["steal_percent"] = round(100 * (steal1 - steal0) / max(1, total1 - total0), 1)
        result["machine_cores"] = ncpu
        result.update(result_database)
        return result

    def once(self, url: str, requests: Path, clients: int) -> dict[str, Any]:
        """Send every request of the file exactly once (the data load)."""
        done = subprocess.run([sys.executable, str(HERE / "pyload.py"), "--url", url,
                               "--requests", str(requests), "--connections", str(clients),
                               "--once"], capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("JSON ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"load failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        result: dict[str, Any] = json.loads(line[5:])
        result["seconds"] = round(result["duration_us"] / 1e6, 3)
        result["per_second"] = round(result["requests"] / result["seconds"], 1)
        result["errors"] = result["status_errors"] + result["read_errors"]
        return result


# ---- request files ----------------------------------------------------------------------------

def write_requests(path: Path, lines: Iterable[tuple[str, str, bytes | None]]) -> Path:
    with open(path, "wb") as handle:
        for method, target, body in lines:
            handle.write(method.encode() + b"\t" + target.encode())
            if body:
                handle.write(b"\t" + body)
            handle.write(b"\n")
    return path


def prepare(dataset: Dataset, work: Path, sample: int, load_file: bool) -> dict[str, Any]:
    """The requests of every scenario, from the first `sample` patients' records; with
    `load_file`, also the PUT of every resource (the data set-up through the server)."""
    log(f"preparing requests for {dataset.patients} patients (seed {dataset.seed})")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = [dataset.record(i) for i in range(1, min(sample, dataset.patients) + 1)]
    patients = [record[0] for record in records]
    # creates use residents beyond the loaded ones, so searches on the loaded ones stay exact
    fresh = [dataset.record(dataset.patients + i)[0] for i in range(1, min(sample, 500) + 1)]
    new_bodies = [orjson.dumps({k: v for k, v in p.items() if k != "id"}) for p in fresh]
    # Two rounds with different phone numbers: replayed in a cycle, each PUT of a patient
    # changes it (an unchanged PUT writes nothing and would measure a no-op).
    updated = []
    for number in ("13900000000", "13900000001"):
        for p in patients:
            changed = dict(p, telecom=[{"system": "phone", "value": number, "use": "mobile"}])
            updated.append(("PUT", f"/fhir/Patient/{p['id']}", orjson.dumps(changed)))
    files = {
        "create": write_requests(work / "create.req",
                                 [("POST", "/fhir/Patient", b) for b in new_bodies]),
        "read": write_requests(work / "read.req",
                               [("GET", f"/fhir/Patient/{p['id']}", None) for p in patients]),
        "update": write_requests(work / "update.req", updated),
        "ping": write_requests(work / "ping.req", [("GET", "/ping", None)]),  # the bare app's
        "health": write_requests(work / "health.req", [("GET", "/healthz", None)]),
    }
    counts: Counter[str] = Counter()
    if load_file:
        def puts() -> Iterable[tuple[str, str, bytes | None]]:
            for r in dataset.resources():
                counts[r["resourceType"]] += 1
                yield "PUT", f"/fhir/{r['resourceType']}/{r['id']}", orjson.dumps(r)

        files["load"] = write_requests(work / "load.req", puts())
    searches = {}
    for search in scenarios.SEARCHES:
        queries = [q for q in (search.query(record[0], record) for record in records) if q]
        searches[search.name] = queries
    return {"files": files, "searches": searches, "patients": patients, "records": records,
            "patients_total": dataset.patients, "resources": sum(counts.values()),
            "counts": dict(sorted(counts.items())),
            "prepare_seconds": round(time.perf_counter() - started, 2),
            "bodies": [b.decode() for b in new_bodies]}


def mixed_requests(data: dict[str, Any], searches: dict[str, list[str]],
                   total: int = 6000) -> list[tuple[str, str, bytes | None]]:
    """The soak's traffic: in every 10 requests 4 reads by id, 3 searches (each kind in turn),
    2 updates and 1 create."""
    def lines(path: Path) -> list[tuple[str, str, bytes | None]]:
        out: list[tuple[str, str, bytes | None]] = []
        for raw in path.read_bytes().splitlines():
            method, target, *body = raw.split(b"\t", 2)
            out.append((method.decode(), target.decode(), body[0] if body else None))
        return out

    pools = {key: lines(data["files"][key]) for key in ("read", "update", "create")}
    kinds = [[("GET", f"/fhir/{q}", None) for q in queries] for queries in searches.values()
             if queries]
    pools["search"] = [kinds[i % len(kinds)][i // len(kinds) % len(kinds[i % len(kinds)])]
                       for i in range(total)] if kinds else pools["read"]
    pattern = ["read", "search", "read", "update", "search", "read", "create", "search",
               "read", "update"]
    used: Counter[str] = Counter()
    out = []
    for i in range(total):
        key = pattern[i % len(pattern)]
        out.append(pools[key][used[key] % len(pools[key])])
        used[key] += 1
    return out


# ---- the run ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loadgen = LoadGenerator(args.loadgen)
        self.results: dict[str, Any] = {"scenarios": [], "skipped": [], "limits": {},
                                        "memory": {"sizes": {}}, "setup": {}, "plans": {},
                                        "calibration": []}
        self.patients = 0  # the data size being measured
        self.db_url: str | None = None  # its database

    def measure(self, url: str, requests: Path, clients: int, server_pid: int | None,
                warmup: bool = True) -> dict[str, Any]:
        drained = wait_idle(self.db_url)
        if warmup and self.args.warmup > 0:
            self.loadgen.run(url, requests, clients, self.args.warmup, server_pid)
        result = self.loadgen.run(url, requests, clients, self.args.duration, server_pid)
        if drained:
            result["waited_for_idle_seconds"] = drained
        return result

    def record(self, group: str, name: str, clients: int, result: dict[str, Any],
               unit: str = "req/s", per_request: float = 1.0,
               server_pid: int | None = None) -> dict[str, Any]:
        # from the count, not from per_second (rounded to 0.1: a Bundle run's resources/s
        # would move in steps of a Bundle's size over 10)
        per_second = result["requests"] / result["seconds"] if result["seconds"] else 0.0
        entry = {"group": group, "name": name, "clients": clients, "unit": unit,
                 "patients": self.patients, "completed": result["requests"] > 0,
                 "rate": round(per_second * per_request, 1), **result}
        if server_pid:
            entry["server_rss_kib"] = tree_memory(server_pid)["rss_kib"]
        self.results["scenarios"].append(entry)
        log(f"{group:12s} {name:55s} c={clients:<3d} {entry['rate']:9.1f} {unit}  "
            f"p50 {result['p50_us'] / 1000:.1f} ms  p95 {result['p95_us'] / 1000:.1f} ms  "
            f"p99 {result['p99_us'] / 1000:.1f} ms  errors {result['errors']}"
            + ("" if entry["completed"] else f"  (no request completed in {result['seconds']} s)")
            + (f"  (waited {result['waited_for_idle_seconds']} s for the database to be idle)"
               if result.get("waited_for_idle_seconds") else ""))
        return entry

    def skip(self, group: str, name: str, reason: str) -> None:
        self.results["skipped"].append({"group": group, "name": name, "reason": reason,
                                        "patients": self.patients})
        log(f"{group:12s} {name:55s} skipped: {reason}")

    # -- Santong, at one data size

    def santong(self, pg_url: str, size: int, data: dict[str, Any], work: Path, *,
                first: bool, last: bool) -> None:
        """Set up `size` patients in a database of their own and measure the server on it:
        everything at the first size, searches at every size, the soak at the last."""
        self.patients = size
        database = f"santong_{size}"
        asyncio.run(create_database(pg_url, database))
        db_url = make_url(pg_url).set(database=database).render_as_string(hide_password=False)
        self.db_url = db_url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANTONG_")}
        env.update(SANTONG_LOG_LEVEL=self.args.server_log_level, SANTONG_DATABASE_URL=db_url,
                   SANTONG_ALLOW_EXPLAIN="true", SANTONG_WORKERS=str(self.args.workers))
        log_path = work / "santong.log"
        with open(log_path, "wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "santong", "serve", "--port",
                                       str(port)], env=env, stdout=out,
                                      stderr=subprocess.STDOUT, cwd=work)
        memory: dict[str, Any] = self.results["memory"]["sizes"].setdefault(str(size), {})
        try:
            # the server migrates and stores its bundled FHIR package before it is ready
            wait_healthy(f"{url}/readyz", server, log_path)
            pid = server.pid
            memory["idle_rss_kib"] = tree_memory(pid)["rss_kib"]
            self.results["setup"][str(size)] = setup = self.setup(size, db_url, url, data)
            memory["loaded_rss_kib"] = tree_memory(pid)["rss_kib"]
            if first:
                for name, key, _ in scenarios.CRUD:
                    for clients in scenarios.CLIENTS:
                        result = self.measure(url, data["files"][key], clients, pid)
                        self.record("santong", name, clients, result, server_pid=pid)
                if self.args.profile:  # before transactions, whose Bundles outlive their run
                    self.profile(url, data, pid, work)
            # The machine's speed right before and after the searches at this size, so their
            # change with the data can be told from the shared machine's slow phases.
            probing = len(self.args.sizes) > 1
            if probing:
                self.probe(url, data, pid, "before")
            self.searches(url, data, work, pid)
            if probing:
                self.probe(url, data, pid, "after")
            if first:
                self.transactions(url, data, work, pid)
            memory["after_scenarios_rss_kib"] = tree_memory(pid)["rss_kib"]
            if last and self.args.soak:
                self.soak(url, data, work, pid)
            memory.update(tree_memory(pid))
            self.results["memory"]["santong"] = memory
            log(f"memory at {size} patients: peak {memory['peak_kib'] / 1024:.0f} MiB, "
                f"now {memory['rss_kib'] / 1024:.0f} MiB; set-up {setup['resources']} "
                f"resources at {setup['per_second']}/s")
        finally:
            stop(server)
            self.db_url = None
            self.results.setdefault("server_log_tail", {})[str(size)] = log_path.read_text(
                errors="replace")[-3000:]
            if not self.args.keep:
                asyncio.run(drop_database(pg_url, database))

    def setup(self, size: int, db_url: str, url: str, data: dict[str, Any]) -> dict[str, Any]:
        """Load the generated community; VACUUM ANALYZE either way, as autovacuum would have."""
        if self.args.setup == "put":
            log(f"set-up: {data['resources']} resources by PUT through the server, 16 clients")
            load = self.loadgen.once(url, data["files"]["load"], 16)
            result: dict[str, Any] = {
                "method": "put", "patients": size, "resources": load["requests"],
                "errors": load["errors"], "failures": load.get("failures", []),
                "seconds": load["seconds"], "per_second": load["per_second"],
                "counts": data["counts"], "processes": 1}
            started = time.perf_counter()
            asyncio.run(bulkload.vacuum_analyze(db_url))
            result["analyze_seconds"] = round(time.perf_counter() - started, 1)
        else:
            # small sizes in this process: starting worker processes would cost more
            processes = self.args.setup_processes if size >= 2000 else 0
            result = {"method": "bulk", **bulkload.load(db_url, size, self.args.seed,
                                                          processes, progress=log)}
        result["database_bytes"] = asyncio.run(database_size(db_url))
        data["resources"], data["counts"] = result["resources"], result["counts"]
        log(f"set-up: {result['resources']} resources ({result['method']}) in "
            f"{result['seconds']} s = {result['per_second']}/s, errors {result['errors']}; "
            f"database {result['database_bytes'] / 2**30:.2f} GiB")
        return result

    def probe(self, url: str, data: dict[str, Any], pid: int, when: str) -> None:
        """The machine's speed now, by two requests whose cost does not depend on the data's
        size: `/healthz` (no database: the server's Python and the network stack) and a read
        by id (one primary-key lookup; a B-tree one level deeper at most)."""
        probes = self.results.setdefault("probes", {}).setdefault(str(self.patients), [])
        entry: dict[str, Any] = {"when": when}
        for name in ("health", "read"):
            result = self.measure(url, data["files"][name], scenarios.PROBE_CLIENTS, pid)
            entry[name] = {k: result[k] for k in ("per_second", "p50_us", "p95_us", "errors",
                                                  "machine_busy_percent", "steal_percent")}
            log(f"probe        {name} {when} the searches at {self.patients} patients "
                f"c={scenarios.PROBE_CLIENTS}: {result['per_second']:9.1f} req/s  "
                f"steal {result['steal_percent']} %  errors {result['errors']}")
        probes.append(entry)

    def searches(self, url: str, data: dict[str, Any], work: Path, pid: int) -> None:
        plans: dict[str, str] = {}
        data["searchable"] = {}
        for search in scenarios.SEARCHES:
            queries = data["searches"][search.name]
            if not queries:
                self.skip("search", search.name, "no query for this data")
                continue
            wait_idle(self.db_url)
            plans[search.name] = explain(url, queries[0])
            started = time.perf_counter()
            status, body = http("GET", f"{url}/fhir/{queries[0]}",
                                headers={"Prefer": "handling=strict"}, timeout=180)
            seconds = time.perf_counter() - started
            if status != 200:
                # 4xx: the server refuses it (not implemented); else it failed (e.g. the
                # database's statement timeout, answered 503)
                reason = (f"not supported yet (strict probe: HTTP {status}" if 400 <= status < 500
                          else f"failed (probe: HTTP {status} after {seconds:.1f} s")
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                    reason += ": " + orjson.loads(body)["issue"][0]["diagnostics"][:120]
                if status == 0:
                    reason += f": {body.decode()[:120]}"
                self.skip("search", search.name, reason + ")")
                continue
            data["searchable"][search.name] = queries
            path = write_requests(work / f"search-{len(self.results['scenarios'])}.req",
                                  [("GET", f"/fhir/{q}", None) for q in queries])
            for clients in scenarios.SEARCH_CLIENTS[-1:] if self.args.quick else \
                    scenarios.SEARCH_CLIENTS:
                # quick mode: the server is warm by now (CRUD ran first), no warm-up each
                result = self.measure(url, path, clients, pid, warmup=not self.args.quick)
                self.record("search", search.name, clients, result, server_pid=pid)
        self.results["plans"][str(self.patients)] = plans

    def soak(self, url: str, data: dict[str, Any], work: Path, pid: int) -> None:
        """Mixed traffic for --soak-seconds in slices, the server's memory after each."""
        args = self.args
        # a search taking seconds at this size would hold the connections and make the soak
        # a measure of that one query
        slow = sorted({x["name"] for x in self.results["scenarios"]
                       if x["group"] == "search" and x["patients"] == self.patients
                       and (not x["completed"] or x["p50_us"] > 1e6)})
        searches = {k: v for k, v in data.get("searchable", {}).items() if k not in slow}
        lines = mixed_requests(data, searches)
        wait_idle(self.db_url)
        path = write_requests(work / "soak.req", lines)
        interval = max(1.0, min(args.soak_interval, args.soak_seconds))
        slices = max(1, round(args.soak_seconds / interval))
        log(f"soak: {slices} × {interval:.0f} s of mixed traffic, 16 clients, at "
            f"{self.patients} patients")
        samples = [{"seconds": 0.0, "rss_kib": tree_memory(pid)["rss_kib"]}]
        started = time.perf_counter()
        for i in range(slices):
            result = self.loadgen.run(url, path, 16, interval, pid, offset=i * 7919)
            samples.append({"seconds": round(time.perf_counter() - started, 1),
                            "rss_kib": tree_memory(pid)["rss_kib"],
                            "per_second": result["per_second"], "p50_us": result["p50_us"],
                            "p95_us": result["p95_us"], "p99_us": result["p99_us"],
                            "requests": result["requests"], "errors": result["errors"]})
            log(f"soak {samples[-1]['seconds']:7.0f} s  {result['per_second']:7.1f} req/s  "
                f"p95 {result['p95_us'] / 1000:.1f} ms  RSS {samples[-1]['rss_kib'] / 1024:.1f}"
                f" MiB  errors {result['errors']}")
        # the baseline: after the first tenth of the soak (caches and pools warm by then)
        baseline = samples[max(1, round(slices / 10))]["rss_kib"]
        final = samples[-1]["rss_kib"]
        self.results["soak"] = {
            "patients": self.patients, "seconds": round(time.perf_counter() - started, 1),
            "interval": interval, "clients": 16, "samples": samples,
            "mix": "per 10 requests: 4 reads by id, 3 searches (each kind in turn), "
                   "2 updates, 1 create", "searches": sorted(searches),
            "excluded_searches": slow,
            "baseline_rss_kib": baseline, "final_rss_kib": final,
            "max_rss_kib": max(x["rss_kib"] for x in samples),
            "growth_percent": round(100 * (final - baseline) / baseline, 1) if baseline else None,
            "requests": sum(x.get("requests", 0) for x in samples),
            "errors": sum(x.get("errors", 0) for x in samples),
        }
        log(f"soak: RSS {baseline / 1024:.1f} -> {final / 1024:.1f} MiB "
            f"({self.results['soak']['growth_percent']} %)")

    def transactions(self, url: str, data: dict[str, Any], work: Path, pid: int) -> None:
        name = f"transaction Bundles of ≥{scenarios.TRANSACTION_ENTRIES} entries"
        # a resident who is in no other scenario (creates use the next 500)
        probe = patient_bundle(Dataset(data["patients_total"], seed=self.args.seed)
                               .record(data["patients_total"] + 1000))
        status, body = http("POST", f"{url}/fhir", orjson.dumps(probe))
        kind = None
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            kind = orjson.loads(body).get("type")
        if status != 200 or kind != "transaction-response":
            self.skip("transaction", name, f"not supported yet (POST /fhir: HTTP {status})")
            return
        # fresh patients (beyond the loaded ones), grouped into bundles of >= N entries
        extra = Dataset(data["patients_total"], seed=self.args.seed)
        bundles: list[bytes] = []
        sizes: list[int] = []
        group: list[dict[str, Any]] = []
        first = data["patients_total"] + 1001
        for index in range(first, first + (100 if self.args.quick else 400)):
            group.extend(extra.record(index))
            if len(group) >= scenarios.TRANSACTION_ENTRIES:
                bundle = patient_bundle(group)
                bundles.append(orjson.dumps(bundle))
                sizes.append(len(bundle["entry"]))
                group = []
        path = write_requests(work / "transaction.req", [("POST", "/fhir", b) for b in bundles])
        for clients in scenarios.TRANSACTION_CLIENTS[-1:] if self.args.quick else \
                scenarios.TRANSACTION_CLIENTS:
            # a Bundle takes a second or more: at least 5 s, so that several complete
            result = self.loadgen.run(url, path, clients, max(5.0, self.args.duration), pid)
            self.record("transaction", name, clients, result, unit="resources/s",
                        per_request=mean(sizes), server_pid=pid)

    def profile(self, url: str, data: dict[str, Any], pid: int, work: Path) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self.skip("profile", "py-spy", "py-spy is not installed (pip install py-spy)")
            return
        for key in ("create", "read"):
            out = self.args.out_dir / f"profile-{key}.txt"
            raw = work / f"profile-{key}.raw"
            spy_process = subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses",
                                            "--format", "raw",
                                            "--output", str(raw), "--duration",
                                            str(round(self.args.duration) + 1), "--rate", "250"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.loadgen.run(url, data["files"][key], 16, self.args.duration + 1, pid)
            spy_process.wait(timeout=60)
            if raw.exists():
                out.write_text(report.summarise_profile(raw.read_text()))
                self.results.setdefault("profiles", {})[key] = out.name

    # -- the limits

    def bare(self, pg_url: str, data: dict[str, Any], work: Path) -> None:
        dsn, host_dir = limit_dsn(pg_url)
        asyncio.run(seed_bare(dsn, host_dir, data["patients"]))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = work / "bare.log"
        with open(log_path, "wb") as out:
            app = subprocess.Popen([sys.executable, str(HERE / "bare_app.py"), "--port",
                                    str(port), "--dsn", dsn, "--host-dir", host_dir or "",
                                    "--workers", str(self.args.workers)],
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"{url}/ping", app, log_path)
            for clients in (16,):  # load generator calibration on a trivial endpoint
                for kind in ("wrk", "python"):
                    if kind == "wrk" and not shutil.which("wrk"):
                        continue
                    result = LoadGenerator(kind).run(url, data["files"]["ping"], clients,
                                                     self.args.duration, app.pid)
                    result["loadgen"] = kind
                    self.results["calibration"].append(result)
                    log(f"calibration  {kind:6s} GET /ping c={clients}: "
                        f"{result['per_second']:.0f} req/s, load generator CPU "
                        f"{result['loadgen_cpu_percent']}%, server CPU "
                        f"{result['server_cpu_percent']}%")
            for name, key, _ in scenarios.CRUD:
                for clients in scenarios.CLIENTS:
                    result = self.measure(url, data["files"][key], clients, app.pid)
                    self.record("bare", name, clients, result, server_pid=app.pid)
            self.results["memory"]["bare"] = proc_status(app.pid)
        finally:
            stop(app)

    def raw(self, pg_url: str, data: dict[str, Any]) -> None:
        dsn, host_dir = limit_dsn(pg_url)
        limit = raw_pg.RawLimit(dsn, host_dir)
        duration = self.args.duration
        bodies = data["bodies"]

        async def go() -> dict[str, Any]:
            await limit.reset()
            out: dict[str, Any] = {}
            out["executemany"] = await limit.executemany(bodies, 1000, duration)
            for clients in scenarios.CLIENTS:
                out[f"insert/{clients}"] = await limit.insert(bodies, clients, duration)
            ids = await limit.ids(5000)
            for clients in scenarios.CLIENTS:
                out[f"select/{clients}"] = await limit.select(ids, clients, duration)
                out[f"update/{clients}"] = await limit.update(ids, bodies, clients, duration)
            return out

        self.results["limits"] = asyncio.run(go())
        for key, value in self.results["limits"].items():
            log(f"asyncpg      {key:55s} {value['per_second']:9.1f} rows/s  "
                f"p50 {value['p50_us'] / 1000:.2f} ms")

    def validation_cost(self, data: dict[str, Any]) -> None:
        by_type: dict[str, list[dict[str, Any]]] = {}
        for record in data["records"]:
            for r in record:
                by_type.setdefault(r["resourceType"], []).append(r)
        profile = scenarios.profile_validator()
        rows = []
        budget = 0.05 if self.args.quick else 0.3
        for rtype, items in sorted(by_type.items()):
            items = items[:200]
            if any(validate_resource(item) for item in items):  # also fills per-type caches
                raise RuntimeError(f"generated {rtype} is invalid")
            row = {"type": rtype, "sample": len(items),
                   "structural_us": per_item_us(validate_resource, items, budget),
                   "bytes": round(mean(len(orjson.dumps(i)) for i in items))}
            if profile is not None:
                row["profile_us"] = per_item_us(profile, items, budget)
            rows.append(row)
        self.results["validation"] = {
            "rows": rows,
            "profile": "available" if profile is not None else
                       "not measured: scenarios.profile_validator() returns None",
        }
        log("validation   " + ", ".join(
            f"{r['type']} {r['structural_us']}" + (f"/{r['profile_us']}" if "profile_us" in r
                                                   else "") + " µs" for r in rows))

    def run(self) -> Path:
        args = self.args
        started = time.perf_counter()
        stamp = datetime.now(UTC)
        mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        args.out_dir = (args.out or HERE / "results" / f"{stamp:%Y%m%d-%H%M%S}-{mode}")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix="santong-bench-"))
        data_dir, work = temp / "data", temp / "work"
        work.mkdir()
        try:
            log(f"mode {mode}: {', '.join(map(str, args.sizes))} patients, {args.duration} s "
                f"per scenario (+{args.warmup} s warm-up), set-up by {args.setup}, load "
                f"generator {self.loadgen.kind}" + (f", soak {args.soak_seconds} s"
                                                    if args.soak else ""))
            pg_url = start_embedded_postgres(data_dir)
            self.loadgen.database_pid = postmaster_pid(data_dir / "pg")
            asyncio.run(create_database(pg_url, "bench_limit"))
            first: dict[str, Any] = {}
            by_size: dict[str, Any] = {}
            for index, size in enumerate(args.sizes):
                data = prepare(Dataset(size, seed=args.seed), work / str(size), args.sample,
                               load_file=args.setup == "put")
                self.santong(pg_url, size, data, work / str(size), first=index == 0,
                             last=index == len(args.sizes) - 1)
                by_size[str(size)] = {"resources": data["resources"], "counts": data["counts"]}
                first = first or data
            self.patients = args.sizes[0]
            self.bare(pg_url, first, work)
            self.raw(pg_url, first)
            self.validation_cost(first)
            self.results["meta"] = meta(self, pg_url, stamp, mode, by_size,
                                        time.perf_counter() - started)
        except BaseException:
            # what was measured before the failure, for a long run not to be lost entirely
            (args.out_dir / "partial.json").write_text(
                json.dumps(self.results, indent=2, ensure_ascii=False, default=str))
            log(f"failed; measurements so far in {args.out_dir / 'partial.json'}")
            raise
        finally:
            if args.keep:
                log(f"kept {temp}")
            else:
                shutil.rmtree(temp, ignore_errors=True)
        report.write(self.results, args.out_dir)
        log(f"report: {args.out_dir / 'report.md'} ({time.perf_counter() - started:.0f} s)")
        return args.out_dir


def wait_idle(db_url: str | None, limit: float = 180.0) -> float:
    """Wait (up to `limit` s) until no client query runs in the database: requests a
    scenario's load generator gave up on keep running in the server and would slow the next
    scenario down. The seconds waited, when more than a poll."""
    if db_url is None:
        return 0.0

    async def busy() -> int:
        import asyncpg

        connection = await asyncpg.connect(**asyncpg_connect_args(db_url))
        try:
            return int(await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"))
        finally:
            await connection.close()

    started = time.perf_counter()
    while asyncio.run(busy()) and time.perf_counter() - started < limit:
        time.sleep(0.5)
    waited = time.perf_counter() - started
    return round(waited, 1) if waited > 0.4 else 0.0


def per_item_us(function: Any, items: list[dict[str, Any]], budget: float) -> float:
    """Mean µs of `function(item)` over `items`, repeated for about `budget` seconds (after a
    first pass that fills caches)."""
    for item in items:
        function(item)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < budget:
        for item in items:
            function(item)
        runs += 1
    return round((time.perf_counter() - started) / (runs * len(items)) * 1e6, 1)


def explain(url: str, query: str) -> str:
    """The server's SQL plan of a search (`_explain`, allowed for the benchmark's server)."""
    status, body = http("GET", f"{url}/fhir/{query}&_explain=true" if "?" in query
                        else f"{url}/fhir/{query}?_explain=true")
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, StopIteration):
        parameters = orjson.loads(body)["parameter"]
        sql = next(p["valueString"] for p in parameters if p["name"] == "sql")
        plan = next(p["valueString"] for p in parameters if p["name"] == "plan")
        return f"{sql}\n\n{plan}"
    return f"(no plan: HTTP {status})"


def limit_dsn(pg_url: str) -> tuple[str, str | None]:
    parsed = make_url(pg_url)
    host = parsed.query.get("host")
    dsn = parsed.set(drivername="postgresql", query={},
                     database="bench_limit").render_as_string(hide_password=False)
    return dsn, host if isinstance(host, str) else None


async def _admin(pg_url: str, *statements: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(**asyncpg_connect_args(pg_url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(pg_url: str, name: str) -> None:
    await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                 f'CREATE DATABASE "{name}"')


async def drop_database(pg_url: str, name: str) -> None:
    await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def database_size(db_url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(**asyncpg_connect_args(db_url))
    try:
        return int(await connection.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await connection.close()


async def seed_bare(dsn: str, host_dir: str | None, patients: list[dict[str, Any]]) -> None:
    """The bare app's table gets the same Patients under the same ids (for read and update)."""
    import asyncpg

    connection = await asyncpg.connect(dsn, **({"host": host_dir} if host_dir else {}))
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bare_resource "
                                 "(id text PRIMARY KEY, content text NOT NULL)")
        await connection.executemany(
            "INSERT INTO bare_resource (id, content) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(p["id"], orjson.dumps(p).decode()) for p in patients])
    finally:
        await connection.close()


def meta(bench: Bench, pg_url: str, stamp: datetime, mode: str, by_size: dict[str, Any],
         seconds: float) -> dict[str, Any]:
    args = bench.args
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    memory_kib = 0
    with contextlib.suppress(OSError, IndexError, ValueError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                                capture_output=True, text=True).stdout.strip())
    versions = {}
    for package in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "orjson", "pgserver",
                    "uvloop", "httptools"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"

    async def pg_version() -> tuple[str, str]:
        import asyncpg

        dsn, host = limit_dsn(pg_url)
        connection = await asyncpg.connect(dsn, **({"host": host} if host else {}))
        try:
            rows = await connection.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name IN"
                " ('shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'work_mem')"
                " ORDER BY name")
            return (str(await connection.fetchval("SHOW server_version")),
                    ", ".join(f"{r['name']} {r['value']}" for r in rows))
        finally:
            await connection.close()

    pg_server_version, pg_settings = asyncio.run(pg_version())

    return {
        "date": stamp.isoformat(timespec="seconds"), "mode": mode,
        "seconds": round(seconds, 1),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "memory_gib":
                    round(memory_kib / 1024 / 1024, 1), "kernel": platform.release(),
                    "os": platform.platform()},
        "versions": {"santong": __version__, "commit": commit + (" (modified)" if dirty else ""),
                     "python": platform.python_version(), "postgresql": pg_server_version,
                     "postgresql_settings": pg_settings,
                     "load_generator": bench.loadgen.version(), **versions},
        "settings": {"sizes": args.sizes, "seed": args.seed, "duration": args.duration,
                     "warmup": args.warmup, "sample": args.sample, "setup": args.setup,
                     "setup_processes": args.setup_processes,
                     "soak_seconds": args.soak_seconds if args.soak else None,
                     "server_log_level": args.server_log_level,
                     "server_processes": args.workers},
        "data": {"patients": args.sizes[0], "sizes": args.sizes,
                 "resources": by_size[str(args.sizes[0])]["resources"],
                 "counts": by_size[str(args.sizes[0])]["counts"], "by_size": by_size},
        "load": os.getloadavg(),
    }


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of patient counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"not a list of patient counts: {text!r}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Santong benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true",
                        help="everyday mode: small data, 2 s per scenario (< 2 minutes)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI smoke mode: tiny data, 1 s per scenario, no warm-up")
    parser.add_argument("--patients", type=int, help="one data size (as --sizes N)")
    parser.add_argument("--sizes", type=_sizes, metavar="N,M,…",
                        help="data sizes in patients, e.g. 10000,100000: searches at each, "
                             "everything else at the first")
    parser.add_argument("--setup", choices=("bulk", "put"), default="bulk",
                        help="load the data by bulk load (the server's rows by COPY, default) "
                             "or by PUT through the server")
    parser.add_argument("--setup-processes", type=int, default=2,
                        help="bulk load processes (2; sizes under 2,000 load in-process)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, help="seconds of load per scenario")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each")
    parser.add_argument("--sample", type=int, default=2000,
                        help="distinct resources/queries each scenario cycles through")
    parser.add_argument("--soak", action="store_true",
                        help="mixed traffic at the last size, sampling the server's memory")
    parser.add_argument("--soak-seconds", type=float, default=600.0,
                        help="length of the soak (600)")
    parser.add_argument("--soak-interval", type=float, default=30.0,
                        help="seconds between memory samples in the soak (30)")
    parser.add_argument("--workers", type=int, default=0,
                        help="server processes, Santong's and the bare app's alike "
                             "(default: as `santong serve`, one per CPU, at most 4)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--server-log-level", default="info",
                        help="Santong's log level during the run (default info, as deployed)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy during create and read")
    parser.add_argument("--out", type=Path, help="report folder (default bench/results/…)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary data folder and the databases")
    args = parser.parse_args(argv)
    if args.smoke:
        args.quick = True
    defaults = ((30, 1.0, 0.0) if args.smoke else (200, 2.0, 1.0) if args.quick
                else (10000, 15.0, 3.0))
    if args.sizes and args.patients is not None:
        parser.error("--patients and --sizes are the same thing: give one")
    args.sizes = args.sizes or [args.patients if args.patients is not None else defaults[0]]
    args.patients = args.sizes[0]
    args.duration = args.duration if args.duration is not None else defaults[1]
    args.warmup = args.warmup if args.warmup is not None else defaults[2]
    args.workers = worker_count(Settings(workers=args.workers))  # 0: resolved as serve does
    return args


def main(argv: list[str] | None = None) -> int:
    Bench(parse_args(argv)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
