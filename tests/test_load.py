"""`santong load`: a folder of Bundles, resources and NDJSON, with one broken file."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers import patient, unique
from tests.test_transaction import SYSTEM, bundle, observation, post, urn, with_identifier

# ../shared beside the clone (as in CI, which must have it: there the test never skips).
SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-r4"


def santong_load(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANTONG_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "santong", "load", "--no-progress", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False))


async def count(client: httpx.AsyncClient, resource_type: str, **params: str) -> int:
    found = await client.get(resource_type, params={**params, "_summary": "count"})
    return int(found.json()["total"])


async def test_load_a_folder_with_one_broken_file(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    mark = unique("load")
    patient_url = urn()
    ids = [unique("lp") for _ in range(4)]
    write(tmp_path / "tx.json", bundle(
        "transaction",
        post(with_identifier(mark), patient_url),
        post(observation(patient_url, id=ids[0])),
    ))
    write(tmp_path / "collection.json", {"resourceType": "Bundle", "type": "collection",
                                         "entry": [{"resource": patient(id=ids[1])},
                                                   {"resource": patient(id=ids[2])}]})
    write(tmp_path / "single.json", patient(id=ids[3]))
    write(tmp_path / "sub" / "batch.json", bundle("batch", post(observation(
        f"Patient/{ids[3]}", identifier=[{"system": SYSTEM, "value": mark}]))))
    (tmp_path / "lines.ndjson").write_text(
        json.dumps(patient(id=unique("nd"))) + "\n"
        + '{"resourceType": "Patient", "id": \n'
        + json.dumps(patient(birthDate="someday")) + "\n\n")
    (tmp_path / "broken.json").write_text('{"resourceType": "Bundle", "type": "transaction", ')
    (tmp_path / "notes.txt").write_text("not FHIR, and not a .json file: skipped")

    first = santong_load(str(tmp_path), database_url=database_url)
    assert first.returncode == 1, first.stderr
    assert "loaded 7 resources from 6 files" in first.stdout, first.stdout
    failures = [line for line in first.stderr.splitlines() if "failed:" in line]
    assert len(failures) == 3, first.stderr
    assert f"{tmp_path / 'broken.json'}: not valid JSON" in failures[0]
    assert f"{tmp_path / 'lines.ndjson'}:2: not valid JSON" in failures[1]
    assert f"{tmp_path / 'lines.ndjson'}:3: 400 Bad Request" in failures[2]
    assert "birthDate" in failures[2]

    assert await count(client, "Patient", identifier=f"{SYSTEM}|{mark}") == 1
    stored = (await client.get(f"Observation/{ids[0]}")).json()
    found = (await client.get("Patient", params={"identifier": f"{SYSTEM}|{mark}"})).json()
    assert stored["subject"]["reference"] == f"Patient/{found['entry'][0]['resource']['id']}"
    for id in ids[1:]:
        assert (await client.get(f"Patient/{id}")).status_code == 200

    # A second run loads the same files without duplicating anything.
    again = santong_load(str(tmp_path), database_url=database_url)
    assert again.returncode == 1
    assert "loaded 7 resources" in again.stdout
    assert await count(client, "Patient", identifier=f"{SYSTEM}|{mark}") == 1
    assert await count(client, "Observation", identifier=f"{SYSTEM}|{mark}") == 1
    # The re-sent, unchanged Patient keeps its version (an unchanged PUT writes nothing).
    assert (await client.get(f"Patient/{ids[3]}")).json()["meta"]["versionId"] == "1"

    # Compressed files load the same way (bulk data exports are often .ndjson.gz).
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    gz_ids = [unique("gz") for _ in range(2)]
    (zipped / "Patient.ndjson.gz").write_bytes(gzip.compress("\n".join(
        json.dumps(patient(id=id), ensure_ascii=False) for id in gz_ids).encode()))
    (zipped / "damaged.json.gz").write_bytes(gzip.compress(b'{"resourceType": "Patient"}')[:-9])
    compressed = santong_load(str(zipped), database_url=database_url)
    assert compressed.returncode == 1, compressed.stderr
    assert "loaded 2 resources from 2 files" in compressed.stdout, compressed.stdout
    assert "damaged.json.gz: cannot read" in compressed.stderr
    for id in gz_ids:
        assert (await client.get(f"Patient/{id}")).json()["name"][0]["family"] == "张"


def test_load_reports_missing_paths(database_url: str, tmp_path: Path) -> None:
    result = santong_load(str(tmp_path / "nowhere"), database_url=database_url)
    assert result.returncode == 2
    assert "no such file" in result.stderr


@pytest.mark.skipif(not SYNTHEA.is_dir() and os.environ.get("CI") != "true",
                    reason="Synthea sample data not present (../shared/data/synthea-r4)")
async def test_load_synthea_into_a_running_server(
    client: httpx.AsyncClient, live_server: str, database_url: str
) -> None:
    files = sorted(SYNTHEA.glob("[A-Z]*.json"))[:2]
    result = santong_load("--url", f"{live_server}/fhir", *map(str, files),
                          database_url=database_url)
    assert result.returncode == 0, result.stderr
    expected = sum(len(json.loads(f.read_text())["entry"]) for f in files)
    assert f"loaded {expected} resources from 2 files" in result.stdout
    patient_id = json.loads(files[0].read_text())["entry"][0]["resource"]["id"]
    assert (await client.get(f"Patient/{patient_id}")).status_code == 200
    encounters = await count(client, "Encounter", subject=f"Patient/{patient_id}")
    assert encounters > 0


async def test_progress_bar_has_a_total_and_reaches_it(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from santong.loader import count_entries, database_sender, load

    write(tmp_path / "tx.json", bundle("transaction", post(patient()), post(patient())))
    write(tmp_path / "collection.json", {"resourceType": "Bundle", "type": "collection",
                                         "entry": [{"resource": patient()}, {"nothing": 1}]})
    (tmp_path / "lines.ndjson").write_text(
        json.dumps(patient()) + "\n\n" + "{not json\n" + json.dumps(patient()) + "\n")
    (tmp_path / "broken.json").write_text('{"resourceType": ')
    counts = {p.name: count_entries(p) for p in sorted(tmp_path.iterdir())}
    assert counts == {"broken.json": 1, "collection.json": 1, "lines.ndjson": 3, "tx.json": 2}

    summary = await load([tmp_path], database_sender(database_url, 2), workers=2,
                         progress=True)
    assert summary.resources == 5 and len(summary.failures) == 2, summary
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    # e.g. "100%|██████████| 7/7 [00:00<00:00, 9.81 resources/s, errors=2]"
    assert "7/7" in bar and "errors=2" in bar and "resources/s" in bar, bar
