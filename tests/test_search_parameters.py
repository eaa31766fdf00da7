"""Custom SearchParameters posted at run time, $reindex, and other processes following along."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import free_port, wait_until_healthy
from tests.helpers import unique

ETHNICITY = "http://santong.example/fhir/StructureDefinition/ethnicity"


def ethnic_patient(code: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "阿"}],
            "extension": [{"url": ETHNICITY, "valueCoding": {
                "system": "urn:oid:2.16.156.10011.2.3.3.3", "code": code}}]}


def search_parameter(code: str) -> dict[str, Any]:
    return {"resourceType": "SearchParameter", "url": f"http://santong.example/fhir/SP/{code}",
            "name": code, "status": "active", "description": "GB 3304 ethnicity",
            "code": code, "base": ["Patient"], "type": "token",
            "expression": f"Patient.extension.where(url='{ETHNICITY}').value"}


async def found(client: httpx.AsyncClient, base: str, code: str, value: str) -> set[str]:
    bundle = (await client.get(f"{base}Patient", params={code: value})).json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


async def test_custom_parameter_indexes_new_writes_and_reindex_catches_up(
    client: httpx.AsyncClient,
) -> None:
    code = unique("ethnicity").replace("-", "")
    value = unique("c")
    before = (await client.post("Patient", json=ethnic_patient(value))).json()["id"]
    created = await client.post("SearchParameter", json=search_parameter(code))
    assert created.status_code == 201, created.text
    after = (await client.post("Patient", json=ethnic_patient(value))).json()["id"]
    assert await found(client, "", code, value) == {after}
    reindexed = await client.post("Patient/$reindex")
    assert reindexed.status_code == 200
    assert "Reindexed" in reindexed.json()["issue"][0]["diagnostics"]
    assert await found(client, "", code, value) == {before, after}
    statement = (await client.get("metadata")).json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert code in {p["name"] for p in patient["searchParam"]}
    deleted = await client.delete(f"SearchParameter/{created.json()['id']}")
    assert deleted.status_code == 204
    unknown = await client.get("Patient", params={code: value},
                               headers={"Prefer": "handling=strict"})
    assert unknown.status_code == 400


async def test_unusable_search_parameter_is_rejected(client: httpx.AsyncClient) -> None:
    broken = {**search_parameter("broken"), "expression": "Patient.name.where(("}
    response = await client.post("SearchParameter", json=broken)
    assert response.status_code == 400
    wrong_base = {**search_parameter("wrongbase"), "base": ["NotAType"]}
    assert (await client.post("SearchParameter", json=wrong_base)).status_code == 400


async def test_another_process_follows_through_notify(
    client: httpx.AsyncClient, live_server: str,
) -> None:
    code = unique("ethnic").replace("-", "")
    value = unique("v")
    assert (await client.post("SearchParameter", json=search_parameter(code))).status_code == 201
    async with httpx.AsyncClient(base_url=f"{live_server}/fhir/") as other:
        # The other process learns of the parameter from NOTIFY, within moments.
        for _ in range(50):
            created = (await other.post("Patient", json=ethnic_patient(value))).json()["id"]
            if created in await found(other, "", code, value):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the other process never indexed the new parameter")


async def test_a_search_form_naming_an_unknown_parameter_checks_for_new_ones(
    client: httpx.AsyncClient,
) -> None:
    """A process that has not yet heard of a SearchParameter another process stored (its
    NOTIFY still on the way) checks the database when a POST _search form names a parameter
    it does not know, as it does for the query string."""
    from santong.search import parameters

    code, value = unique("ethnic").replace("-", ""), unique("v")
    assert (await client.post("SearchParameter", json=search_parameter(code))).status_code == 201
    created = (await client.post("Patient", json=ethnic_patient(value))).json()["id"]
    await asyncio.sleep(0.5)  # this process's own NOTIFY has been handled
    # Back to how this process was before the SearchParameter: as if stored elsewhere.
    custom = client._transport.app.state.router.custom_parameters  # type: ignore[attr-defined]
    parameters.unregister(search_parameter(code)["url"])
    custom.registered.discard(search_parameter(code)["url"])
    custom.version -= 1
    strict = {"Prefer": "handling=strict"}
    response = await client.post("Patient/_search", data={code: value}, headers=strict)
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [created]


def test_several_server_processes_agree_at_once(database_url: str, tmp_path: Path) -> None:
    """`santong serve` with two worker processes: a SearchParameter stored through one is
    used by whichever process answers next, without waiting for its NOTIFY (a search naming
    a parameter a process does not know makes it check the database first)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SANTONG_DATABASE_URL": database_url, "SANTONG_WORKERS": "2"}
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "santong", "serve", "--port",
                                    str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(url, process)
        children = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                    and _parent(p) == process.pid]
        assert len(children) >= 2, "two worker processes (and uvicorn's supervisor)"
        code, value = unique("ethnic").replace("-", ""), unique("v")
        strict = {"Prefer": "handling=strict", "Connection": "close"}
        before = httpx.post(f"{url}/fhir/Patient", json=ethnic_patient(value)).json()["id"]
        assert httpx.post(f"{url}/fhir/SearchParameter",
                          json=search_parameter(code)).status_code == 201
        created = set()
        for _ in range(10):  # a new connection each time: the kernel spreads them over both
            created.add(httpx.post(f"{url}/fhir/Patient", json=ethnic_patient(value),
                                   headers={"Connection": "close"}).json()["id"])
            response = httpx.get(f"{url}/fhir/Patient", params={code: value}, headers=strict)
            assert response.status_code == 200, response.text
        assert httpx.post(f"{url}/fhir/Patient/$reindex").status_code == 200
        bundle = httpx.get(f"{url}/fhir/Patient", params={code: value, "_count": 50},
                           headers=strict).json()
        assert {e["resource"]["id"] for e in bundle["entry"]} == {before, *created}
    finally:
        process.terminate()
        process.wait(timeout=60)


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


async def test_definitions_written_in_opposite_orders_do_not_deadlock(
    client: httpx.AsyncClient,
) -> None:
    """Transactions that write a SearchParameter and a ValueSet (two version counters) in
    opposite orders, at the same time, all succeed: the counters are locked in one order."""
    def bundle(first_search_parameter: bool) -> dict[str, Any]:
        code = unique("sp").replace("-", "")
        entries = [
            {"resource": search_parameter(code),
             "request": {"method": "POST", "url": "SearchParameter"}},
            {"resource": {"resourceType": "ValueSet", "status": "draft",
                          "url": f"http://santong.example/fhir/ValueSet/{code}"},
             "request": {"method": "POST", "url": "ValueSet"}},
        ]
        if not first_search_parameter:
            entries.reverse()
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    responses = await asyncio.gather(*(client.post("", json=bundle(n % 2 == 0))
                                       for n in range(8)))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses
                                                              if r.status_code != 200]
