"""history for an instance, a type and the system, with _since, _at, _count and paging."""

from __future__ import annotations

import asyncio

import httpx
from tests.helpers import create, patient

from santong.fhir.versioning import instant, now


def links(bundle: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


async def test_history_paging_and_since(client: httpx.AsyncClient) -> None:
    started = instant(now())
    await asyncio.sleep(0.01)
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    for n in range(4):
        assert (await client.put(url, json={**created, "birthDate": f"200{n}-01-01"})
                ).status_code == 200

    page = (await client.get(f"{url}/_history", params={"_count": 2})).json()
    versions = [e["resource"]["meta"]["versionId"] for e in page["entry"]]
    assert versions == ["5", "4"]
    # Writes between pages do not disturb the cursor.
    assert (await client.put(url, json=created)).status_code == 200
    seen = list(versions)
    while "next" in links(page):
        page = (await client.get(links(page)["next"])).json()
        seen += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
    assert seen == ["5", "4", "3", "2", "1"]

    type_history = (await client.get("Patient/_history",
                                      params={"_since": started, "_count": 1000})).json()
    ours = [e for e in type_history["entry"] if e["fullUrl"].endswith(f"/Patient/{created['id']}")]
    assert len(ours) == 6
    system = (await client.get("_history", params={"_since": started, "_count": 1000})).json()
    assert {e["fullUrl"] for e in ours} <= {e["fullUrl"] for e in system["entry"]}
    assert all(e["request"]["url"].startswith("Patient") for e in ours)
    assert ours[-1]["response"]["status"] == "201 Created"

    after = (await client.get(f"{url}/_history", params={"_since": instant(now())})).json()
    assert "entry" not in after


async def test_history_at(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    url = f"Patient/{created['id']}"
    await asyncio.sleep(0.05)
    middle = instant(now())
    await asyncio.sleep(0.05)
    assert (await client.put(url, json={**created, "gender": "female"})).status_code == 200
    at_middle = (await client.get(f"{url}/_history", params={"_at": middle})).json()
    assert [e["resource"]["meta"]["versionId"] for e in at_middle["entry"]] == ["1"]
    this_year = middle[:4]
    at_year = (await client.get(f"{url}/_history", params={"_at": this_year})).json()
    assert [e["resource"]["meta"]["versionId"] for e in at_year["entry"]] == ["2", "1"]
    assert "entry" not in (await client.get(f"{url}/_history", params={"_at": "1999"})).json()


async def test_history_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("Patient/nope-never/_history")).status_code == 404
