"""A real `santong serve` process over HTTP, driven by real FHIR clients and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient
from fhirpy import AsyncFHIRClient
from tests.conftest import free_port, wait_until_healthy
from tests.helpers import unique

import santong


def test_health_and_readiness(live_server: str) -> None:
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_every_response_has_a_request_id(live_server: str) -> None:
    response = httpx.get(f"{live_server}/fhir/metadata", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    assert httpx.get(f"{live_server}/fhir/Patient/x").headers["X-Request-Id"]


def test_fhirclient_reads_metadata_and_creates_and_reads_a_patient(live_server: str) -> None:
    smart = smart_client.FHIRClient(settings={"app_id": "santong-tests",
                                              "api_base": f"{live_server}/fhir"})
    statement = CapabilityStatement.read_from("metadata", smart.server)
    assert statement.fhirVersion == "4.0.1"
    patient_types = [r for r in statement.rest[0].resource if r.type == "Patient"]
    assert {i.code for i in patient_types[0].interaction} >= {"read", "create", "update"}

    patient = Patient()
    name = HumanName()
    name.family, name.given = "王", ["小明"]
    patient.name = [name]
    patient.gender = "male"
    created = patient.create(smart.server)
    assert created is not None
    id = created["id"]
    read = Patient.read(id, smart.server)
    assert read.name[0].family == "王"
    assert read.meta.versionId == "1"


async def test_fhirpy_create_search_update_delete(live_server: str) -> None:
    fhir = AsyncFHIRClient(f"{live_server}/fhir", extra_headers={"Accept": "application/fhir+json"})
    value = unique("fhirpy")
    patient = fhir.resource("Patient", identifier=[{"system": "urn:x", "value": value}],
                            name=[{"family": "赵"}])
    await patient.save()
    assert patient["id"]
    found = await fhir.resources("Patient").search(identifier=f"urn:x|{value}").fetch_all()
    assert [p["id"] for p in found] == [patient["id"]]
    patient["gender"] = "female"
    await patient.save()
    again = await fhir.reference("Patient", patient["id"]).to_resource()
    assert again["gender"] == "female"
    assert again["meta"]["versionId"] == "2"
    await patient.delete()
    response = httpx.get(f"{live_server}/fhir/Patient/{patient['id']}")
    assert response.status_code == 410


def test_version_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "santong", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"santong {santong.__version__}"


def test_port_in_use_is_one_clear_line(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SANTONG_DATABASE_URL": database_url}
        result = subprocess.run([sys.executable, "-m", "santong", "serve", "--port", str(port)],
                                capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == f"santong: port {port} on 127.0.0.1 is already in use"


@pytest.mark.parametrize("url", ["postgresql://santong@127.0.0.1:1/santong",
                                 "mysql://santong@localhost/santong"])
def test_unusable_database_is_one_clear_line(url: str) -> None:
    env = {**os.environ, "SANTONG_DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "santong", "serve", "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("santong: ")
    assert "Traceback" not in result.stderr


def _start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "santong", "serve", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_embedded_database_survives_a_restart(tmp_path: Path) -> None:
    """`santong serve` with no database URL: embedded PostgreSQL, data kept across restarts."""
    env = {k: v for k, v in os.environ.items() if k != "SANTONG_DATABASE_URL"}
    env["SANTONG_LOG_JSON"] = "true"
    data_dir, log_path = tmp_path / "data", tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--data-dir", str(data_dir)]

    process = _start(args, env, log_path)
    try:
        wait_until_healthy(url, process, timeout=120)
        created = httpx.post(f"{url}/fhir/Patient", json={"resourceType": "Patient",
                                                          "name": [{"family": "孙"}]})
        assert created.status_code == 201
    finally:
        assert _stop(process) == 0
    output = log_path.read_text()
    assert f"FHIR base:  http://127.0.0.1:{port}/fhir" in output
    assert f"data dir:   {data_dir.resolve()}" in output
    assert "database:   embedded PostgreSQL" in output
    assert (data_dir / "pg" / "PG_VERSION").exists()
    # One JSON log line per request, with method, path, status, duration and request id.
    records = [json.loads(line) for line in output.splitlines() if line.startswith('{"method"')]
    post = next(r for r in records if r["method"] == "POST")
    assert post["path"] == "/fhir/Patient" and post["status"] == 201
    assert post["duration_ms"] >= 0 and post["request_id"]

    process = _start(args, env, log_path)
    try:
        wait_until_healthy(url, process, timeout=120)
        read = httpx.get(created.headers["Location"].rsplit("/_history", 1)[0])
        assert read.status_code == 200
        assert read.json()["name"] == [{"family": "孙"}]
    finally:
        assert _stop(process) == 0


_RESTART_WHILE_SHARED = """
import json, os, subprocess, sys
from pathlib import Path
import pgserver
from santong.storage.database import _restart_if_alone, start_embedded_postgres

pgdata = Path(sys.argv[1]) / "pg"
start_embedded_postgres(Path(sys.argv[1]))
server = pgserver.get_server(pgdata, cleanup_mode="stop")
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
server.global_process_id_list.get_and_add(other.pid)  # another process's handle
before = (pgdata / "postmaster.pid").read_text().split()[0]
kept = _restart_if_alone(server, pgdata)
after = (pgdata / "postmaster.pid").read_text().split()[0]
print(json.dumps({"same_server": before == after, "same_handle": kept is server,
                  "handles": sorted(server.global_process_id_list.get()),
                  "expected": sorted([os.getpid(), other.pid])}))
server.global_process_id_list.get_and_remove(other.pid)
other.kill()
"""


def test_embedded_database_is_not_restarted_under_another_process(tmp_path: Path) -> None:
    """A server another process also holds (pgserver's handle list) is not stopped to apply
    shared_buffers: both keep their handles; the settings apply at its next start."""
    result = subprocess.run([sys.executable, "-c", _RESTART_WHILE_SHARED, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["same_server"] and found["same_handle"]
    assert found["handles"] == found["expected"]
    assert not (tmp_path / "pg" / "postmaster.pid").exists()  # stopped when the last left


def test_embedded_shared_buffers_follow_a_container_limit(tmp_path: Path) -> None:
    """The lowest memory limit of the process's cgroup and its ancestors (cgroup v2
    memory.max, v1 memory.limit_in_bytes, found from /proc/self/cgroup) bounds the memory the
    embedded server's shared buffers are sized from; "max" is no limit."""
    from santong.storage.database import memory_available

    machine = memory_available(tmp_path / "none", tmp_path / "no-membership")
    assert machine > 0
    v2, membership = tmp_path / "v2", tmp_path / "cgroup"
    (v2 / "system.slice" / "santong.service").mkdir(parents=True)
    membership.write_text("0::/system.slice/santong.service\n")
    (v2 / "system.slice" / "santong.service" / "memory.max").write_text("max\n")
    assert memory_available(v2, membership) == machine
    (v2 / "system.slice" / "memory.max").write_text("536870912\n")  # a parent's limit
    assert memory_available(v2, membership) == 512 * 2**20
    v1 = tmp_path / "v1"
    (v1 / "memory" / "docker" / "abc").mkdir(parents=True)
    membership.write_text("5:devices:/docker/abc\n4:memory:/docker/abc\n")
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_available(v1, membership) == min(machine, 2**30)


_SHOW_EMBEDDED_SETTINGS = """
import asyncio, json, sys
from pathlib import Path
import asyncpg
from santong.storage.database import asyncpg_connect_args, start_embedded_postgres

async def main() -> None:
    url = start_embedded_postgres(Path(sys.argv[1]))
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    rows = await connection.fetch(
        "SELECT name, setting, unit FROM pg_settings WHERE name IN"
        " ('shared_buffers', 'max_wal_size', 'checkpoint_timeout')")
    print(json.dumps({r["name"]: [int(r["setting"]), r["unit"]] for r in rows}))
    await connection.close()

asyncio.run(main())
"""


def test_embedded_database_is_tuned_for_writes(tmp_path: Path) -> None:
    """The embedded server runs with more shared buffers and rarer checkpoints than initdb's
    defaults (128 MB; every 1 GB of WAL or 5 minutes) from its first start (a new data
    directory is restarted once), and keeps them on later starts; it stops with its process."""
    from santong.storage.database import embedded_settings

    shared_mb = int(embedded_settings()["shared_buffers"].removesuffix("MB"))
    expected = {"shared_buffers": [shared_mb * 1024 // 8, "8kB"], "max_wal_size": [4096, "MB"],
                "checkpoint_timeout": [900, "s"]}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", _SHOW_EMBEDDED_SETTINGS, str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == expected
        assert not (tmp_path / "pg" / "postmaster.pid").exists()  # stopped at exit
    assert 128 <= shared_mb <= 1024


def test_graceful_shutdown_finishes_in_flight_requests(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SANTONG_DATABASE_URL": database_url,
           "SANTONG_MAX_BODY_BYTES": str(64 * 1024 * 1024)}
    process = _start(["--port", str(port)], env, tmp_path / "serve.log")
    try:
        wait_until_healthy(url, process)
        # A large body sent slowly keeps a request in flight while the server is told to stop.
        chunks = [b'{"resourceType":"Patient","text":{"status":"generated","div":"<div>']
        chunks += [b"x" * 1024 * 1024] * 8 + [b'</div>"}}']

        def slow_body() -> Iterator[bytes]:
            for n, chunk in enumerate(chunks):
                if n == 2:
                    process.send_signal(signal.SIGTERM)
                time.sleep(0.1)
                yield chunk

        response = httpx.post(f"{url}/fhir/Patient", content=slow_body(),
                              headers={"Content-Type": "application/fhir+json"}, timeout=60)
        assert response.status_code == 201
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_kept_alive_client_sends_bundle_after_bundle(live_server: str) -> None:
    """Bundles' answers may close the connection (several processes, see FhirRoutes): a
    client holding one connection open carries on over a new one."""
    with httpx.Client(base_url=f"{live_server}/fhir") as client:
        for _ in range(3):
            family = unique("kept")
            answer = client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                           "entry": [{"resource": {
                                               "resourceType": "Patient",
                                               "name": [{"family": family}]},
                                               "request": {"method": "POST", "url": "Patient"}}]})
            assert answer.status_code == 200, answer.text
            found = client.get("Patient", params={"family": family}).json()
            assert [e["resource"]["name"][0]["family"] for e in found["entry"]] == [family]


async def test_startup_freezes_what_it_loaded(database_url: str) -> None:
    """What a process loads before serving is kept out of the cyclic garbage collector's
    walks (gc.freeze): with it walked, a full collection paused the process 110-120 ms."""
    import gc

    from santong.api.app import create_app
    from santong.settings import Settings

    gc.unfreeze()  # whatever an earlier app in this test process froze
    app = create_app(Settings(), database_url)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 100_000
