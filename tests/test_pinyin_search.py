"""Patient name search in pinyin: the package's `name-pinyin` SearchParameter, computed by
santong.search.pinyin, and the standard `name` parameter widened to it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.helpers import unique

from santong.search import pinyin

SYSTEM = "urn:santong:test:pinyin"


def test_spellings_of_a_name() -> None:
    assert pinyin.spellings("张三") == ["zhangsan", "zhang san", "zs"]
    assert pinyin.spellings("张") == ["zhang"]
    assert pinyin.spellings("Zhang San") == []  # nothing to add for names without Chinese
    # ü both as typed (v) and as folded from ü (u)
    assert pinyin.spellings("吕") == ["lv", "lu"]
    # polyphonic: every reading, the likeliest combination first
    found = pinyin.spellings("曾乐")
    assert {"zengle", "cengle", "zengyue", "zy", "cl"} <= set(found)
    assert found[0] == "".join(r[0] for r in (pinyin.readings("曾"), pinyin.readings("乐")))


def test_spellings_are_bounded() -> None:
    name = "单曾乐行长朝重"  # seven polyphonic characters
    assert len(pinyin.spellings(name)) <= 3 * pinyin.MAX_COMBINATIONS
    assert all(len(pinyin.readings(c)) <= 2 * pinyin.MAX_READINGS for c in name)


@pytest.mark.parametrize(("query", "expected"), [
    ("zhangsan", "zhangsan"), ("Zhang San", "zhang san"), ("zhāng sān", "zhang san"),
    ("zhang1 san1", "zhang san"), ("ZHANG1SAN1", "zhangsan"), ("lǚ", "lu"), ("xi'an", "xian"),
    ("张三", None), ("zhang-san", None), ("123", None),
])
def test_query_values(query: str, expected: str | None) -> None:
    assert pinyin.query_value(query) == expected


def test_index_values_cover_each_part_and_the_whole_name() -> None:
    found = pinyin.index_values([("HumanName", {"family": "王", "given": ["桂英"],
                                                "text": "王桂英"})])
    assert {"wang", "guiying", "gui ying", "gy", "wangguiying", "wgy"} <= set(found)
    assert len(found) == len(set(found))


async def _patient(client: httpx.AsyncClient, family: str, given: str) -> dict[str, Any]:
    body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": unique()}],
            "name": [{"family": family, "given": [given]}]}
    response = await client.post("Patient", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def _finds(client: httpx.AsyncClient, patient: dict[str, Any], **params: str) -> bool:
    identifier = patient["identifier"][0]
    response = await client.get("Patient", params={
        **params, "identifier": f"{identifier['system']}|{identifier['value']}"})
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])] == [patient["id"]]


async def test_name_search_matches_pinyin(client: httpx.AsyncClient) -> None:
    zhang = await _patient(client, "张", "三")
    for query in ("zhangsan", "zhang san", "zs", "Zhāng Sān", "zhang1 san1", "zhang", "san",
                  "zhangs", "张三", "张", "zhangsi,zs"):
        assert await _finds(client, zhang, name=query), query
    for query in ("zhangsi", "lisi", "zx", "sanzhang", "zhang-san"):
        assert not await _finds(client, zhang, name=query), query
    # The SearchParameter of its own; :exact and :contains stay with the written name.
    assert await _finds(client, zhang, **{"name-pinyin": "zs"})
    assert not await _finds(client, zhang, **{"name-pinyin": "张"})
    assert not await _finds(client, zhang, **{"name:exact": "zhangsan"})
    assert await _finds(client, zhang, **{"name:exact": "张三"})
    assert not await _finds(client, zhang, **{"name:contains": "angs"})
    # family and given are not widened: they are the written name parts
    assert not await _finds(client, zhang, family="zhang")
    # An update replaces the pinyin with the new name's.
    renamed = {**zhang, "name": [{"family": "李", "given": ["四"]}]}
    assert (await client.put(f"Patient/{zhang['id']}", json=renamed)).status_code == 200
    assert not await _finds(client, zhang, name="zhangsan")
    assert await _finds(client, zhang, name="lisi")
    assert await _finds(client, zhang, name="ls")


async def test_name_search_alone_matches_pinyin(client: httpx.AsyncClient) -> None:
    """`name` as the search's only condition, where a page may be read from the name index
    alone (santong.search.engine, _in_rid_order): the pinyin rows still count."""
    patient = await _patient(client, "犇", "淼鑫")
    response = await client.get("Patient", params={"name": "benmiaoxin", "_count": "1000"})
    assert response.status_code == 200, response.text
    assert patient["id"] in [e["resource"]["id"] for e in response.json().get("entry", [])]


async def test_polyphonic_names(client: httpx.AsyncClient) -> None:
    zeng = await _patient(client, "曾", "乐乐")
    for query in ("zengyueyue", "zeng le le", "cenglele", "zyy", "zll"):
        assert await _finds(client, zeng, name=query), query
    shan = await _patient(client, "单", "雄信")
    for query in ("shanxiongxin", "danxiongxin", "sxx"):
        assert await _finds(client, shan, name=query), query


async def test_chained_name_search_in_pinyin(client: httpx.AsyncClient) -> None:
    patient = await _patient(client, "欧阳", "娜娜")
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                   "subject": {"reference": f"Patient/{patient['id']}"}}
    created = (await client.post("Observation", json=observation)).json()
    found = (await client.get("Observation", params={
        "subject:Patient.name": "ouyang nana", "_id": created["id"]})).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [created["id"]]
