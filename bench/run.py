"""`make bench`: Santong measured side by side with what this machine can do, in one run.

1. Starts an embedded PostgreSQL (pgserver) in a temporary folder and `santong serve` on it.
2. Generates a community (`santong.generate`) and loads it with PUTs (update-as-create).
3. Drives each scenario from a separate process (wrk, or bench/pyload.py when wrk is missing):
   create / read by id / update at 1 and 16 clients, searches, transactions (probed: the ones
   the server cannot do yet are reported as skipped).
4. Measures the limits on the same PostgreSQL with the same load generator and concurrency: a
   bare FastAPI + asyncpg app (bench/bare_app.py), and asyncpg alone (bench/raw_pg.py).
5. Writes report.md and report.json (and PNG charts when matplotlib is installed) under
   bench/results/<date>-<mode>/, stating the machine, versions, data size and date.

Usage: python bench/run.py [--quick] [--patients N] [--duration S] [--loadgen auto|wrk|python]
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
import urllib.request
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

import raw_pg  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402

from santong import __version__  # noqa: E402
from santong.generate import Dataset  # noqa: E402
from santong.generate.output import patient_bundle  # noqa: E402
from santong.storage.database import start_embedded_postgres  # noqa: E402
from santong.validation import validate_resource  # noqa: E402

FHIR_JSON = "application/fhir+json"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Accept": FHIR_JSON, **({"Content-Type": FHIR_JSON} if body else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def machine_busy() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


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

    def version(self) -> str:
        if self.kind == "wrk":
            out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
            return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0]
        return f"bench/pyload.py (Python {platform.python_version()}, asyncio + uvloop)"

    def command(self, url: str, requests: Path, clients: int, duration: float) -> list[str]:
        if self.kind == "wrk":
            return ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s",
                    "--timeout", "30s", "-s", str(HERE / "requests.lua"), url, "--",
                    str(requests)]
        return [sys.executable, str(HERE / "pyload.py"), "--url", url, "--requests",
                str(requests), "--connections", str(clients), "--duration", str(duration)]

    def run(self, url: str, requests: Path, clients: int, duration: float,
            server_pid: int | None = None) -> dict[str, Any]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = proc_cpu_seconds(server_pid) if server_pid else 0.0
        busy0, total0 = machine_busy()
        started = time.perf_counter()
        done = subprocess.run(self.command(url, requests, clients, duration),
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        busy1, total1 = machine_busy()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
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
        result["machine_cores"] = ncpu
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

def write_requests(path: Path, lines: list[tuple[str, str, bytes | None]]) -> Path:
    with open(path, "wb") as handle:
        for method, target, body in lines:
            handle.write(method.encode() + b"\t" + target.encode())
            if body:
                handle.write(b"\t" + body)
            handle.write(b"\n")
    return path


def prepare(dataset: Dataset, work: Path, sample: int) -> dict[str, Any]:
    log(f"generating {dataset.patients} patients (seed {dataset.seed})")
    started = time.perf_counter()
    shared = dataset.shared()
    records = list(dataset.records())
    generate_seconds = time.perf_counter() - started
    everything = shared + [r for record in records for r in record]
    patients = [record[0] for record in records]
    load_lines = [("PUT", f"/fhir/{r['resourceType']}/{r['id']}", orjson.dumps(r))
                  for r in everything]
    picked = patients[:sample]
    # creates use residents beyond the loaded ones, so searches on the loaded ones stay exact
    fresh = [dataset.record(dataset.patients + i)[0] for i in range(1, min(sample, 500) + 1)]
    new_bodies = [orjson.dumps({k: v for k, v in p.items() if k != "id"}) for p in fresh]
    updated = []
    for p in picked:
        changed = dict(p, telecom=[{"system": "phone", "value": "13900000000", "use": "mobile"}])
        updated.append(("PUT", f"/fhir/Patient/{p['id']}", orjson.dumps(changed)))
    files = {
        "load": write_requests(work / "load.req", load_lines),
        "create": write_requests(work / "create.req",
                                 [("POST", "/fhir/Patient", b) for b in new_bodies]),
        "read": write_requests(work / "read.req",
                               [("GET", f"/fhir/Patient/{p['id']}", None) for p in picked]),
        "update": write_requests(work / "update.req", updated),
        "ping": write_requests(work / "ping.req", [("GET", "/ping", None)]),
    }
    searches = {}
    for search in scenarios.SEARCHES:
        queries = [q for q in (search.query(record[0], record) for record in records[:sample])
                   if q]
        searches[search.name] = queries
    return {"files": files, "searches": searches, "patients": patients, "records": records,
            "resources": len(everything), "generate_seconds": round(generate_seconds, 2),
            "bodies": [b.decode() for b in new_bodies],
            "counts": {t: sum(1 for r in everything if r["resourceType"] == t)
                       for t in sorted({r["resourceType"] for r in everything})}}


# ---- the run ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loadgen = LoadGenerator(args.loadgen)
        self.results: dict[str, Any] = {"scenarios": [], "skipped": [], "limits": {},
                                        "memory": {}, "calibration": []}

    def measure(self, url: str, requests: Path, clients: int, server_pid: int | None,
                warmup: bool = True) -> dict[str, Any]:
        if warmup and self.args.warmup > 0:
            self.loadgen.run(url, requests, clients, self.args.warmup, server_pid)
        return self.loadgen.run(url, requests, clients, self.args.duration, server_pid)

    def record(self, group: str, name: str, clients: int, result: dict[str, Any],
               unit: str = "req/s", per_request: float = 1.0,
               server_pid: int | None = None) -> dict[str, Any]:
        entry = {"group": group, "name": name, "clients": clients, "unit": unit,
                 "rate": round(result["per_second"] * per_request, 1), **result}
        if server_pid:
            entry["server_rss_kib"] = proc_status(server_pid).get("VmRSS")
        self.results["scenarios"].append(entry)
        log(f"{group:12s} {name:55s} c={clients:<3d} {entry['rate']:9.1f} {unit}  "
            f"p50 {result['p50_us'] / 1000:.1f} ms  p99 {result['p99_us'] / 1000:.1f} ms  "
            f"errors {result['errors']}")
        return entry

    def skip(self, group: str, name: str, reason: str) -> None:
        self.results["skipped"].append({"group": group, "name": name, "reason": reason})
        log(f"{group:12s} {name:55s} skipped: {reason}")

    # -- Santong

    def santong(self, data_dir: Path, data: dict[str, Any], work: Path) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANTONG_")}
        env["SANTONG_LOG_LEVEL"] = self.args.server_log_level
        log_path = work / "santong.log"
        with open(log_path, "wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "santong", "serve", "--port",
                                       str(port), "--data-dir", str(data_dir)], env=env,
                                      stdout=out, stderr=subprocess.STDOUT, cwd=work)
        try:
            wait_healthy(f"{url}/readyz", server, log_path)
            pid = server.pid
            self.results["memory"]["santong_idle_rss_kib"] = proc_status(pid).get("VmRSS")
            log(f"santong serve pid {pid} on {url}; loading {data['resources']} resources")
            load = self.loadgen.once(url, data["files"]["load"], 16)
            self.results["load"] = {"resources": load["requests"], "errors": load["errors"],
                                    "seconds": load["seconds"],
                                    "per_second": load["per_second"],
                                    "failures": load.get("failures", [])}
            log(f"loaded {load['requests']} resources in {load['seconds']} s "
                f"({load['per_second']}/s, PUT, 16 clients), errors {load['errors']}")
            self.results["memory"]["santong_loaded_rss_kib"] = proc_status(pid).get("VmRSS")
            for name, key, _ in scenarios.CRUD:
                for clients in scenarios.CLIENTS:
                    result = self.measure(url, data["files"][key], clients, pid)
                    self.record("santong", name, clients, result, server_pid=pid)
            if self.args.profile:  # before transactions, whose Bundles outlive their run
                self.profile(url, data, pid, work)
            self.searches(url, data, work, pid)
            self.transactions(url, data, work, pid)
            self.results["memory"]["santong"] = proc_status(pid)
        finally:
            stop(server)
            self.results["server_log_tail"] = log_path.read_text(errors="replace")[-3000:]

    def searches(self, url: str, data: dict[str, Any], work: Path, pid: int) -> None:
        for search in scenarios.SEARCHES:
            queries = data["searches"][search.name]
            if not queries:
                self.skip("search", search.name, "no query for this data")
                continue
            status, body = http("GET", f"{url}/fhir/{queries[0]}",
                                headers={"Prefer": "handling=strict"})
            if status != 200:
                reason = f"not supported yet (strict probe: HTTP {status}"
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                    reason += ": " + orjson.loads(body)["issue"][0]["diagnostics"][:120]
                self.skip("search", search.name, reason + ")")
                continue
            path = write_requests(work / f"search-{len(self.results['scenarios'])}.req",
                                  [("GET", f"/fhir/{q}", None) for q in queries])
            for clients in scenarios.SEARCH_CLIENTS[-1:] if self.args.quick else \
                    scenarios.SEARCH_CLIENTS:
                # quick mode: the server is warm by now (CRUD ran first), no warm-up each
                result = self.measure(url, path, clients, pid, warmup=not self.args.quick)
                self.record("search", search.name, clients, result, server_pid=pid)

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
            spy_process = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw",
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
                                    str(port), "--dsn", dsn, "--host-dir", host_dir or ""],
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
            for item in items:  # the first pass fills the validator's per-type caches
                validate_resource(item)
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < budget:
                for item in items:
                    if validate_resource(item):
                        raise RuntimeError(f"generated {rtype} is invalid")
                runs += 1
            structural = (time.perf_counter() - started) / (runs * len(items)) * 1e6
            row = {"type": rtype, "sample": len(items), "structural_us": round(structural, 1),
                   "bytes": round(mean(len(orjson.dumps(i)) for i in items))}
            if profile is not None:
                started = time.perf_counter()
                for item in items:
                    profile(item)
                row["profile_us"] = round((time.perf_counter() - started) / len(items) * 1e6, 1)
            rows.append(row)
        self.results["validation"] = {
            "rows": rows,
            "profile": "available" if profile is not None else
                       "not available: no three-connections profiles yet (fhir_profiles/ is "
                       "empty); plug in scenarios.profile_validator()",
        }
        log("validation   " + ", ".join(f"{r['type']} {r['structural_us']} µs" for r in rows))

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
            log(f"mode {mode}: {args.patients} patients, {args.duration} s per scenario "
                f"(+{args.warmup} s warm-up), load generator {self.loadgen.kind}")
            pg_url = start_embedded_postgres(data_dir)
            asyncio.run(create_limit_database(pg_url))
            dataset = Dataset(args.patients, seed=args.seed)
            data = prepare(dataset, work, args.sample)
            data["patients_total"] = args.patients
            self.santong(data_dir, data, work)
            self.bare(pg_url, data, work)
            self.raw(pg_url, data)
            self.validation_cost(data)
            self.results["meta"] = meta(self, pg_url, stamp, mode, data,
                                        time.perf_counter() - started)
        finally:
            if args.keep:
                log(f"kept {temp}")
            else:
                shutil.rmtree(temp, ignore_errors=True)
        report.write(self.results, args.out_dir)
        log(f"report: {args.out_dir / 'report.md'} ({time.perf_counter() - started:.0f} s)")
        return args.out_dir


def limit_dsn(pg_url: str) -> tuple[str, str | None]:
    parsed = make_url(pg_url)
    host = parsed.query.get("host")
    dsn = parsed.set(drivername="postgresql", query={},
                     database="bench_limit").render_as_string(hide_password=False)
    return dsn, host if isinstance(host, str) else None


async def create_limit_database(pg_url: str) -> None:
    import asyncpg

    parsed = make_url(pg_url)
    host = parsed.query.get("host")
    dsn = parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, **({"host": host} if isinstance(host, str) else {}))
    try:
        await connection.execute("DROP DATABASE IF EXISTS bench_limit")
        await connection.execute("CREATE DATABASE bench_limit")
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


def meta(bench: Bench, pg_url: str, stamp: datetime, mode: str, data: dict[str, Any],
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

    async def pg_version() -> str:
        import asyncpg

        dsn, host = limit_dsn(pg_url)
        connection = await asyncpg.connect(dsn, **({"host": host} if host else {}))
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    return {
        "date": stamp.isoformat(timespec="seconds"), "mode": mode,
        "seconds": round(seconds, 1),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "memory_gib":
                    round(memory_kib / 1024 / 1024, 1), "kernel": platform.release(),
                    "os": platform.platform()},
        "versions": {"santong": __version__, "commit": commit + (" (modified)" if dirty else ""),
                     "python": platform.python_version(), "postgresql": asyncio.run(pg_version()),
                     "load_generator": bench.loadgen.version(), **versions},
        "settings": {"patients": args.patients, "seed": args.seed, "duration": args.duration,
                     "warmup": args.warmup, "sample": args.sample,
                     "server_log_level": args.server_log_level},
        "data": {"patients": args.patients, "resources": data["resources"],
                 "counts": data["counts"], "generate_seconds": data["generate_seconds"]},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Santong benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true",
                        help="everyday mode: small data, 2 s per scenario (< 2 minutes)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI smoke mode: tiny data, 1 s per scenario, no warm-up")
    parser.add_argument("--patients", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, help="seconds of load per scenario")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each")
    parser.add_argument("--sample", type=int, default=2000,
                        help="distinct resources/queries each scenario cycles through")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--server-log-level", default="info",
                        help="Santong's log level during the run (default info, as deployed)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy during create and read")
    parser.add_argument("--out", type=Path, help="report folder (default bench/results/…)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args(argv)
    if args.smoke:
        args.quick = True
    defaults = ((30, 1.0, 0.0) if args.smoke else (200, 2.0, 1.0) if args.quick
                else (10000, 15.0, 3.0))
    args.patients = args.patients if args.patients is not None else defaults[0]
    args.duration = args.duration if args.duration is not None else defaults[1]
    args.warmup = args.warmup if args.warmup is not None else defaults[2]
    return args


def main(argv: list[str] | None = None) -> int:
    Bench(parse_args(argv)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
