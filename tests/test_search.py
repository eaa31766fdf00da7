"""FHIR search, table-driven from the spec text (http://hl7.org/fhir/R4/search.html).

Each test tags its resources with a tag of its own and adds `_tag` to every search, so tests
never see each other's data.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.helpers import admin, unique

TAG = "urn:santong:test"


async def put_all(client: httpx.AsyncClient, tag: str, resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        resource.setdefault("meta", {})["tag"] = [{"system": TAG, "code": tag}]
        response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text


async def ids(client: httpx.AsyncClient, tag: str, resource_type: str,
              params: dict[str, Any] | list[tuple[str, str]]) -> set[str]:
    query = list(params.items()) if isinstance(params, dict) else list(params)
    response = await client.get(resource_type, params=[*query, ("_tag", f"{TAG}|{tag}")])
    assert response.status_code == 200, response.text
    bundle = response.json()
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"}


@pytest.fixture(scope="module")
async def people(client: httpx.AsyncClient) -> str:
    tag = unique("people")
    await put_all(client, tag, [
        {"resourceType": "Patient", "id": f"{tag}-zs", "gender": "male",
         "birthDate": "1970-03-15", "name": [{"family": "张", "given": ["三"]}],
         "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110101197003150011",
                         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                              "code": "NI"}]}}],
         "address": [{"city": "北京", "district": "东城区"}],
         "telecom": [{"system": "phone", "value": "13800000000"}],
         "text": {"status": "generated", "div": "<div>张三 高血压随访</div>"}},
        {"resourceType": "Patient", "id": f"{tag}-mu", "gender": "female",
         "birthDate": "1985-11", "name": [{"family": "Müller", "given": ["Anna"]}],
         "identifier": [{"value": "no-system-1"}]},
        {"resourceType": "Patient", "id": f"{tag}-ls", "gender": "male",
         "birthDate": "2001", "name": [{"family": "李", "given": ["四"], "text": "李四"}],
         "active": True},
    ])
    return tag


@pytest.mark.parametrize(("params", "expected"), [
    ({"name": "张"}, {"zs"}),
    ({"name": "张三"}, {"zs"}),
    ({"name": "三"}, {"zs"}),
    ({"family": "muller"}, {"mu"}),
    ({"family": "MÜLL"}, {"mu"}),
    ({"family:exact": "Müller"}, {"mu"}),
    ({"family:exact": "muller"}, set()),
    ({"name:contains": "ll"}, {"mu"}),
    ({"name": "张,李"}, {"zs", "ls"}),
    ({"address-city": "北"}, {"zs"}),
    ({"gender": "male"}, {"zs", "ls"}),
    ({"gender": "http://hl7.org/fhir/administrative-gender|female"}, set()),
    ({"gender:not": "male"}, {"mu"}),
    ({"active": "true"}, {"ls"}),
    ({"active:missing": "true"}, {"zs", "mu"}),
    ({"identifier": "urn:oid:2.16.156.10011.1.3|110101197003150011"}, {"zs"}),
    ({"identifier": "|no-system-1"}, {"mu"}),
    ({"identifier": "urn:oid:2.16.156.10011.1.3|"}, {"zs"}),
    ({"identifier:of-type": "http://terminology.hl7.org/CodeSystem/v2-0203|NI|110101197003150011"},
     {"zs"}),
    ({"phone": "13800000000"}, {"zs"}),
    ({"birthdate": "1970"}, {"zs"}),
    ({"birthdate": "1970-03"}, {"zs"}),
    ({"birthdate": "1970-03-15"}, {"zs"}),
    ({"birthdate": "1970-03-16"}, set()),
    ({"birthdate": "1985"}, {"mu"}),
    # A search value more precise than the target's does not contain it: eq fails.
    ({"birthdate": "1985-11-05"}, set()),
    ({"birthdate": "ge1985-11"}, {"mu", "ls"}),
    ({"birthdate": "gt1985-11"}, {"ls"}),
    ({"birthdate": "lt1985"}, {"zs"}),
    ({"birthdate": "le1985-11-30"}, {"zs", "mu"}),
    ({"birthdate": "sa1984"}, {"mu", "ls"}),
    ({"birthdate": "eb1985"}, {"zs"}),
    ({"birthdate": "ne1970"}, {"mu", "ls"}),
    ({"birthdate": "ap1970-03-15"}, {"zs"}),
    ({"_text": "随访"}, {"zs"}),
    ({"_content": "东城区"}, {"zs"}),
    ({"_content": "anna"}, {"mu"}),
    ({"_content": "female"}, {"mu"}),  # codes are content; dates and meta are not
    ({"_content": "1970-03-15"}, set()),
])
async def test_patient_parameters(client: httpx.AsyncClient, people: str,
                                  params: dict[str, str], expected: set[str]) -> None:
    assert await ids(client, people, "Patient", params) == {f"{people}-{e}" for e in expected}


async def test_repeated_parameters_are_anded(client: httpx.AsyncClient, people: str) -> None:
    both = [("gender", "male"), ("birthdate", "ge2000")]
    assert await ids(client, people, "Patient", both) == {f"{people}-ls"}


@pytest.fixture(scope="module")
async def clinic(client: httpx.AsyncClient, people: str) -> str:
    tag = people
    patient = f"Patient/{tag}-zs"
    await put_all(client, tag, [
        {"resourceType": "Encounter", "id": f"{tag}-e1", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "type": [{"coding": [{"system": "urn:types", "code": "op", "display": "门诊"}],
                   "text": "门诊"}],
         "subject": {"reference": patient},
         "period": {"start": "2024-05-11T09:00:00+08:00", "end": "2024-05-11T10:00:00+08:00"}},
        {"resourceType": "Observation", "id": f"{tag}-bp", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6",
                              "display": "Systolic blood pressure"}], "text": "收缩压"},
         "subject": {"reference": patient}, "encounter": {"reference": f"Encounter/{tag}-e1"},
         "effectiveDateTime": "2024-05-11T09:30:00+08:00",
         "valueQuantity": {"value": 150, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"resourceType": "Observation", "id": f"{tag}-wt", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
         "subject": {"reference": f"Patient/{tag}-mu",
                     "identifier": {"system": "urn:x", "value": "mu-1"}},
         "valueQuantity": {"value": 62.50, "unit": "kg", "system": "http://unitsofmeasure.org",
                           "code": "kg"}},
        {"resourceType": "RiskAssessment", "id": f"{tag}-ra", "status": "final",
         "subject": {"reference": patient}, "prediction": [{"probabilityDecimal": 0.35}]},
        {"resourceType": "ValueSet", "id": f"{tag}-vs", "status": "active",
         "url": f"http://santong.example/fhir/ValueSet/{tag}"},
        {"resourceType": "List", "id": f"{tag}-list", "status": "current", "mode": "working",
         "entry": [{"item": {"reference": f"Observation/{tag}-bp"}}]},
    ])
    return tag


@pytest.mark.parametrize(("resource_type", "params", "expected"), [
    ("Observation", {"subject": "Patient/{t}-zs"}, {"bp"}),
    ("Observation", {"subject": "{t}-zs"}, {"bp"}),
    ("Observation", {"subject:Patient": "{t}-zs"}, {"bp"}),
    ("Observation", {"subject": "http://testserver/fhir/Patient/{t}-zs"}, {"bp"}),
    ("Observation", {"patient": "{t}-mu"}, {"wt"}),
    ("Observation", {"subject:identifier": "urn:x|mu-1"}, {"wt"}),
    ("Observation", {"encounter:missing": "true"}, {"wt"}),
    ("Observation", {"code": "http://loinc.org|8480-6"}, {"bp"}),
    ("Observation", {"code": "8480-6,29463-7"}, {"bp", "wt"}),
    ("Observation", {"code:text": "收缩"}, {"bp"}),
    ("Observation", {"code:text": "systolic"}, {"bp"}),
    ("Observation", {"value-quantity": "150"}, {"bp"}),
    ("Observation", {"value-quantity": "gt100|http://unitsofmeasure.org|mm[Hg]"}, {"bp"}),
    ("Observation", {"value-quantity": "lt100||kg"}, {"wt"}),
    ("Observation", {"value-quantity": "62.5"}, {"wt"}),
    ("Observation", {"value-quantity": "ap60"}, {"wt"}),
    # UCUM quantities compare in canonical units: 62.50 kg is 62500 g.
    ("Observation", {"value-quantity": "62500|http://unitsofmeasure.org|g"}, {"wt"}),
    ("Observation", {"value-quantity": "gt60000|http://unitsofmeasure.org|g"}, {"wt"}),
    ("Observation", {"value-quantity": "lt0.05|http://unitsofmeasure.org|t"}, set()),
    ("Observation", {"value-quantity": "gt19|http://unitsofmeasure.org|kPa"}, {"bp"}),
    ("Observation", {"code-value-quantity": "http://loinc.org|8480-6$gt100"}, {"bp"}),
    ("Observation", {"code-value-quantity": "http://loinc.org|8480-6$lt100"}, set()),
    ("Observation", {"code-value-quantity": "29463-7$62.5,8480-6$150"}, {"bp", "wt"}),
    # Both components must hold in the same composite value.
    ("Observation", {"code-value-quantity": "8480-6$62.5"}, set()),
    ("Observation", {"date": "2024-05-11"}, {"bp"}),
    ("Observation", {"date": "2024-05-11T01:30:00Z"}, {"bp"}),
    ("Observation", {"subject.name": "张"}, {"bp"}),
    ("Observation", {"subject:Patient.birthdate": "lt1980"}, {"bp"}),
    ("Observation", {"encounter.subject.gender": "male"}, {"bp"}),
    ("Observation", {"_list": "{t}-list"}, {"bp"}),
    ("Encounter", {"date": "2024-05"}, {"e1"}),
    ("Encounter", {"date": "ge2024-05-11T10:30:00+08:00"}, set()),
    ("Encounter", {"class": "AMB"}, {"e1"}),
    # The concept's text is its coding's display: one row carries both.
    ("Encounter", {"type:text": "门"}, {"e1"}),
    ("Encounter", {"type:missing": "false", "type:not": "urn:types|op"}, set()),
    ("Patient", {"_has:Observation:subject:code": "8480-6"}, {"zs"}),
    ("Patient", {"_has:Observation:patient:_has:List:item:_id": "{t}-list"}, {"zs"}),
    ("RiskAssessment", {"probability": "0.35"}, {"ra"}),
    ("RiskAssessment", {"probability": "gt0.3"}, {"ra"}),
    ("RiskAssessment", {"probability": "lt0.3"}, set()),
    ("ValueSet", {"url": "http://santong.example/fhir/ValueSet/{t}"}, {"vs"}),
    ("ValueSet", {"url:below": "http://santong.example/fhir/"}, {"vs"}),
    ("ValueSet", {"url:above": "http://santong.example/fhir/ValueSet/{t}/extra"}, {"vs"}),
])
async def test_clinical_parameters(client: httpx.AsyncClient, clinic: str, resource_type: str,
                                   params: dict[str, str], expected: set[str]) -> None:
    query = {k: v.format(t=clinic) for k, v in params.items()}
    found = await ids(client, clinic, resource_type, query)
    assert found == {f"{clinic}-{e}" for e in expected}


async def test_include_and_revinclude(client: httpx.AsyncClient, clinic: str) -> None:
    tag = f"{TAG}|{clinic}"
    bundle = (await client.get("Observation", params={
        "_id": f"{clinic}-bp", "_include": "Observation:subject", "_tag": tag})).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("Observation", "match"), ("Patient", "include")}
    iterated = (await client.get("Observation", params=[
        ("_id", f"{clinic}-bp"), ("_include", "Observation:encounter"),
        ("_include:iterate", "Encounter:subject")])).json()
    assert {e["resource"]["resourceType"] for e in iterated["entry"]} == {
        "Observation", "Encounter", "Patient"}
    rev = (await client.get("Patient", params={
        "_id": f"{clinic}-zs", "_revinclude": "Observation:subject"})).json()
    included = {e["resource"]["id"] for e in rev["entry"] if e["search"]["mode"] == "include"}
    assert included == {f"{clinic}-bp"}
    star = (await client.get("Observation", params={"_id": f"{clinic}-bp", "_include": "*"}))
    assert {e["resource"]["resourceType"] for e in star.json()["entry"]} == {
        "Observation", "Encounter", "Patient"}


async def test_sort_and_keyset_paging(client: httpx.AsyncClient, people: str) -> None:
    tag = f"{TAG}|{people}"
    order = []
    url: str | None = None
    first = await client.get("Patient", params={"_tag": tag, "_sort": "-birthdate",
                                                "_count": 1})
    page = first.json()
    while True:
        order += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((li["url"] for li in page["link"] if li["relation"] == "next"), None)
        if url is None:
            break
        page = (await client.get(url)).json()
    assert order == [f"{people}-ls", f"{people}-mu", f"{people}-zs"]
    # And back again with the previous links, from the last page to the first.
    assert not any(li["relation"] == "previous" for li in first.json()["link"])
    back = [e["resource"]["id"] for e in page["entry"]]
    while (url := next((li["url"] for li in page["link"] if li["relation"] == "previous"),
                       None)) is not None:
        page = (await client.get(url)).json()
        back = [e["resource"]["id"] for e in page["entry"]] + back
    assert back == order
    by_name = (await client.get("Patient", params={"_tag": tag, "_sort": "family,_id"})).json()
    assert [e["resource"]["id"] for e in by_name["entry"]] == [
        f"{people}-mu", f"{people}-zs", f"{people}-ls"]  # Müller < 张 < 李 in code points
    assert (await client.get("Patient", params={"_sort": "nonsense"})).status_code == 400


async def test_totals_and_summary_count(client: httpx.AsyncClient, people: str) -> None:
    tag = f"{TAG}|{people}"
    accurate = (await client.get("Patient", params={"_tag": tag, "_total": "accurate",
                                                    "_count": 1})).json()
    assert accurate["total"] == 3 and len(accurate["entry"]) == 1
    estimate = (await client.get("Patient", params={"_tag": tag, "_total": "estimate",
                                                    "_count": 1})).json()
    assert isinstance(estimate["total"], int)
    count = (await client.get("Patient", params={"_tag": tag, "_summary": "count"})).json()
    assert count["total"] == 3 and "entry" not in count


async def test_system_and_compartment_search(client: httpx.AsyncClient, clinic: str) -> None:
    tag = f"{TAG}|{clinic}"
    system = (await client.get("", params={"_type": "Patient,Encounter", "_tag": tag})).json()
    assert {e["resource"]["resourceType"] for e in system["entry"]} == {"Patient", "Encounter"}
    compartment = (await client.get(f"Patient/{clinic}-zs/Observation")).json()
    assert {e["resource"]["id"] for e in compartment["entry"]} == {f"{clinic}-bp"}
    everything = (await client.get(f"Patient/{clinic}-zs/*")).json()
    assert {e["resource"]["id"] for e in everything["entry"]} >= {
        f"{clinic}-bp", f"{clinic}-e1", f"{clinic}-ra", f"{clinic}-zs"}
    assert (await client.get(f"Patient/{clinic}-zs/ValueSet")).status_code == 404


async def test_post_search_and_last_updated(client: httpx.AsyncClient, people: str) -> None:
    response = await client.post("Patient/_search",
                                 data={"name": "张", "_tag": f"{TAG}|{people}"})
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [f"{people}-zs"]
    recent = await ids(client, people, "Patient", {"_lastUpdated": "gt2020-01-01"})
    assert len(recent) == 3
    assert await ids(client, people, "Patient", {"_lastUpdated": "lt2020-01-01"}) == set()


async def test_unknown_and_malformed_parameters(client: httpx.AsyncClient, people: str) -> None:
    lenient = (await client.get("Patient", params={"_tag": f"{TAG}|{people}",
                                                   "shoe-size": "42"})).json()
    assert len([e for e in lenient["entry"] if e["search"]["mode"] == "match"]) == 3
    outcome = next(e for e in lenient["entry"] if e["search"]["mode"] == "outcome")
    assert "shoe-size" in outcome["resource"]["issue"][0]["diagnostics"]
    assert "shoe-size" not in next(li["url"] for li in lenient["link"]
                                   if li["relation"] == "self")
    strict = await client.get("Patient", params={"shoe-size": "42"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["shoe-size"]
    for params in ({"birthdate": "19xx"}, {"birthdate": "zz1970"},
                   {"gender:below": "male"}, {"_has:Nope:subject:code": "x"},
                   {"subject:Nope.name": "x"}, {"_total": "some"}, {"_cursor": "!!"},
                   {"identifier:of-type": "onlyone"}, {"code-value-quantity": "8480-6"}):
        observation = "subject" in str(params) or "code-value" in str(params)
        response = await client.get("Observation" if observation else "Patient",
                                    params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_conditional_create_with_any_search(client: httpx.AsyncClient,
                                                  people: str) -> None:
    criteria = f"family=%E5%BC%A0&birthdate=1970-03-15&_tag={TAG}|{people}"
    response = await client.post("Patient", json={"resourceType": "Patient"},
                                 headers={"If-None-Exist": criteria})
    assert response.status_code == 200
    assert response.json()["id"] == f"{people}-zs"


async def test_explain(client: httpx.AsyncClient, people: str) -> None:
    response = await client.get("Patient", params={"name": "张", "_explain": "true"})
    assert response.status_code == 200
    parameters = {p["name"]: p["valueString"] for p in response.json()["parameter"]}
    assert "search_string" in parameters["sql"]
    assert "Scan" in parameters["plan"] or "Join" in parameters["plan"]


async def test_terminology_modifiers(client: httpx.AsyncClient) -> None:
    tag = unique("terms")
    system = f"http://santong.example/fhir/CodeSystem/{tag}"
    await put_all(client, tag, [
        {"resourceType": "CodeSystem", "id": f"{tag}-cs", "url": system, "status": "active",
         "content": "complete", "hierarchyMeaning": "is-a", "concept": [
             {"code": "CVD", "display": "心血管病", "concept": [
                 {"code": "HTN", "display": "高血压", "concept": [{"code": "HTN1"}]},
                 {"code": "CHD"}]},
             {"code": "DM", "concept": [{"code": "T2DM"}]}]},
        {"resourceType": "ValueSet", "id": f"{tag}-chronic", "status": "active",
         "url": f"http://santong.example/fhir/ValueSet/{tag}-chronic", "compose": {"include": [
             {"system": system, "filter": [{"property": "concept", "op": "is-a",
                                            "value": "HTN"}]},
             {"system": system, "concept": [{"code": "T2DM"}]}]}},
    ])
    conditions = []
    for code in ("HTN1", "CHD", "T2DM", "DM"):
        conditions.append({"resourceType": "Condition", "id": f"{tag}-{code}",
                           "subject": {"reference": "Patient/x"},
                           "code": {"coding": [{"system": system, "code": code}]}})
    await put_all(client, tag, conditions)

    async def codes(params: dict[str, str]) -> set[str]:
        return {i.removeprefix(f"{tag}-") for i in await ids(client, tag, "Condition", params)}

    assert await codes({"code:below": f"{system}|CVD"}) == {"HTN1", "CHD"}
    assert await codes({"code:below": f"{system}|DM"}) == {"T2DM", "DM"}
    assert await codes({"code:above": f"{system}|HTN1"}) == {"HTN1"}
    assert await codes({"code:above": f"{system}|T2DM"}) == {"T2DM", "DM"}
    value_set = f"http://santong.example/fhir/ValueSet/{tag}-chronic"
    assert await codes({"code:in": value_set}) == {"HTN1", "T2DM"}
    assert await codes({"code:in": f"ValueSet/{tag}-chronic"}) == {"HTN1", "T2DM"}
    assert await codes({"code:not-in": value_set}) == {"CHD", "DM"}
    missing = await client.get("Condition", params={"code:in": "http://nowhere/ValueSet/x"})
    assert missing.status_code == 400
    assert missing.json()["issue"][0]["expression"] == ["code:in"]


async def test_access_filter_limits_matches_and_includes(
    client: httpx.AsyncClient, clinic: str, database_url: str,
) -> None:
    """The request context's search filter (what authorisation will fill) narrows every query."""
    import orjson

    from santong.fhir import jsonio
    from santong.fhir.context import RequestContext
    from santong.fhir.request import FhirRequest
    from santong.fhir.router import Router
    from santong.settings import Settings
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    class OnlyZhang(RequestContext):
        def search_filter(self, resource_type: str) -> tuple[str, dict[str, Any]] | None:
            if resource_type == "Patient":
                return "r.id = :only", {"only": f"{clinic}-zs"}
            return None

    engine = create_engine(database_url)
    try:
        router = Router(Repository(engine), Settings())
        request = FhirRequest("GET", "Observation", query=[
            ("_tag", f"{TAG}|{clinic}"), ("_include", "Observation:subject")],
            base_url="http://testserver/fhir", context=OnlyZhang())
        response = await router.handle(request)
        entries = orjson.loads(jsonio.dumps(response.resource))["entry"]
        included = {e["resource"]["id"] for e in entries if e["search"]["mode"] == "include"}
        matches = [e for e in entries if e["search"]["mode"] == "match"]
        assert len(matches) == 2  # Observations are not limited
        patients = await router.handle(FhirRequest(
            "GET", "Patient", query=[("_tag", f"{TAG}|{clinic}")],
            base_url="http://testserver/fhir", context=OnlyZhang()))
        assert patients.resource["total"] == 1
    finally:
        await engine.dispose()
    # The other Observation's subject (Müller) is filtered out of the includes.
    assert included == {f"{clinic}-zs"}


async def test_default_order_and_sort_ties_are_creation_order(client: httpx.AsyncClient) -> None:
    """Without `_sort` resources come in the order they were created, and so do a sort's ties,
    ascending or descending, on every page; `_sort=_id` still orders by id."""
    tag = unique("order")
    made = []
    for _ in range(5):
        response = await client.post("Patient", json={
            "resourceType": "Patient", "meta": {"tag": [{"system": TAG, "code": tag}]},
            "birthDate": "1970-01-01"})
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    # An update keeps a resource's place.
    updated = (await client.get(f"Patient/{made[0]}")).json()
    updated["gender"] = "female"
    assert (await client.put(f"Patient/{made[0]}", json=updated)).status_code == 200
    for sort in (None, "birthdate", "-birthdate"):
        url: str | None = f"Patient?_tag={TAG}|{tag}&_count=2" + (f"&_sort={sort}" if sort else "")
        found: list[str] = []
        while url is not None:
            page = (await client.get(url)).json()
            found += [e["resource"]["id"] for e in page.get("entry", [])]
            url = next((li["url"] for li in page["link"] if li["relation"] == "next"), None)
        assert found == made, sort
    by_id = (await client.get("Patient", params={"_tag": f"{TAG}|{tag}", "_sort": "_id"})).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == sorted(made)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("sort", ["_id", "-birthdate", "family,-_id", "-gender,birthdate",
                                  "-_lastUpdated", "_lastUpdated,family"])
async def test_previous_links_walk_back_the_same_pages(
    client: httpx.AsyncClient, people: str, count: int, sort: str,
) -> None:
    params = {"_tag": f"{TAG}|{people}", "_sort": sort, "_count": count}
    pages = [(await client.get("Patient", params=params)).json()]
    while (url := next((li["url"] for li in pages[-1]["link"] if li["relation"] == "next"),
                       None)) is not None:
        pages.append((await client.get(url)).json())
    forward = [[e["resource"]["id"] for e in p.get("entry", [])] for p in pages]
    assert sum(len(p) for p in forward) == 3
    backward = [forward[-1]]
    page = pages[-1]
    while (url := next((li["url"] for li in page["link"] if li["relation"] == "previous"),
                       None)) is not None:
        page = (await client.get(url)).json()
        backward.insert(0, [e["resource"]["id"] for e in page.get("entry", [])])
    assert backward == forward


async def test_compartment_holds_exactly_what_its_definition_links(
        client: httpx.AsyncClient) -> None:
    """http://hl7.org/fhir/R4/compartmentdefinition-patient.html: an Observation is in a
    patient's compartment through subject or performer, not through focus; the patient itself
    is in it; another patient's resources are not."""
    from tests.helpers import create, patient

    mine = (await create(client, patient())).json()["id"]
    other = (await create(client, patient())).json()["id"]
    code = {"text": "血压"}

    async def observation(**links: Any) -> str:
        body = {"resourceType": "Observation", "status": "final", "code": code, **links}
        return str((await create(client, body)).json()["id"])

    by_subject = await observation(subject={"reference": f"Patient/{mine}"})
    by_performer = await observation(subject={"reference": f"Patient/{other}"},
                                     performer=[{"reference": f"Patient/{mine}"}])
    by_focus = await observation(subject={"reference": f"Patient/{other}"},
                                 focus=[{"reference": f"Patient/{mine}"}])
    found = (await client.get(f"Patient/{mine}/*", params={"_count": 100})).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {mine, by_subject, by_performer}
    assert by_focus not in {e["resource"]["id"] for e in (
        await client.get(f"Patient/{mine}/Observation")).json()["entry"]}
    theirs = (await client.get(f"Patient/{other}/*", params={"_count": 100})).json()
    assert {e["resource"]["id"] for e in theirs["entry"]} == {other, by_performer, by_focus}


async def every_page(client: httpx.AsyncClient, url: str | None) -> tuple[list[str], list[str]]:
    """The ids on every page of a search, and the SQL each page was found with."""
    found, sqls = [], []
    while url is not None:
        explained = (await client.get(url + "&_explain=true")).json()
        sqls.append(next(p["valueString"] for p in explained["parameter"] if p["name"] == "sql"))
        page = (await client.get(url)).json()
        found += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((li["url"] for li in page["link"] if li["relation"] == "next"), None)
    return found, sqls


def _rare_character() -> str:
    """A CJK character (Extension B) no other test's names begin with, as a prefix alone."""
    import random

    return chr(random.randrange(0x20000, 0x2A6D0))


@pytest.mark.parametrize("initial", [False, True], ids=["prefix", "one-character"])
async def test_string_prefix_pages_come_from_the_index_in_creation_order(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, database_url: str,
    initial: bool,
) -> None:
    """A search whose one condition is a string prefix reads each page from the value index
    in rid (creation) order (engine._in_rid_order), or, for a name's first character, from
    the index of names' first characters (Compiler._initial_in_rid_order): the same pages as
    the other plans, a patient matching under two names once, a deleted one never; when a
    filter drops one of a page's candidates the other plans take over; an outdated cursor is
    a 400."""
    import base64

    import orjson

    from santong.fhir import jsonio
    from santong.fhir.context import RequestContext
    from santong.fhir.request import FhirRequest
    from santong.fhir.router import Router
    from santong.search import engine, query
    from santong.settings import Settings
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    # A prefix no other test's patients share; given names have the first characters' index.
    family = _rare_character() if initial else "寿" + unique("").replace("-", "")
    param = "given" if initial else "family"
    listing = "left(y.value, 1) = " if initial else "WITH RECURSIVE"

    async def post(*names: str) -> str:
        response = await client.post("Patient", json={"resourceType": "Patient", "name": [
            {"given": [n]} if initial else {"family": n} for n in names]})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    made = [await post(family + suffix) for suffix in ("", "乙", "", "甲", "", "乙", "")]
    await post("寿")  # shares only a shorter prefix (or none)
    await post("寿" + family)  # holds it, but not first
    made.append(await post(family, family + "甲"))  # under two values: listed once
    made.append(await post(family + "丙"))
    deleted = made.pop(2)
    assert (await client.delete(f"Patient/{deleted}")).status_code in (200, 204)

    for count in (1, 3, 20):
        ids, sqls = await every_page(client, f"Patient?{param}={family}&_count={count}")
        assert ids == made, count
        assert all(listing in sql for sql in sqls), count
    if initial:
        # `name` has the index too, under which this patient matches twice (X, X乙); its
        # `family`, a surname, is read by the skip scan.
        both = (await client.post("Patient", json={"resourceType": "Patient", "name": [
            {"family": family, "given": ["乙"]}]})).json()["id"]
        ids, sqls = await every_page(client, f"Patient?name={family}&_count=2")
        assert ids == [*made, both] and all(listing in sql for sql in sqls)
        ids, sqls = await every_page(client, f"Patient?family={family}&_count=2")
        assert ids == [both] and "WITH RECURSIVE" in sqls[0] and listing not in sqls[0]
        # The same pages from the value index's prefixes (the skip scan).
        monkeypatch.setattr(query, "NAME_INITIAL_CODES", frozenset())
        ids, sqls = await every_page(client, f"Patient?given={family}&_count=3")
        assert ids == made and all("WITH RECURSIVE" in sql for sql in sqls)
    monkeypatch.setattr(engine, "ORDERED_VALUES", 0)  # as if the prefix had too many values
    ids, sqls = await every_page(client, f"Patient?{param}={family}&_count=3")
    assert ids == made and not any(listing in sql or "WITH RECURSIVE" in sql for sql in sqls)
    monkeypatch.undo()

    class NotTheFirst(RequestContext):
        def search_filter(self, resource_type: str) -> tuple[str, dict[str, Any]] | None:
            return "r.id <> :first", {"first": made[0]}

    database = create_engine(database_url)
    try:
        router = Router(Repository(database), Settings())
        response = await router.handle(FhirRequest(
            "GET", "Patient", query=[(param, family), ("_count", "3")],
            base_url="http://testserver/fhir", context=NotTheFirst()))
        page = orjson.loads(jsonio.dumps(response.resource))
    finally:
        await database.dispose()
    assert [e["resource"]["id"] for e in page["entry"]] == made[1:4]
    # Read from the four candidates alone, the page would end the search here.
    assert any(li["relation"] == "next" for li in page["link"]), page["link"]

    outdated = base64.urlsafe_b64encode(orjson.dumps({"a": ["Patient", made[0]]})).decode()
    response = await client.get("Patient", params={param: family, "_cursor": outdated})
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["_cursor"]


def _crowded_after_two_values(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A prefix counts as crowded past two values, nothing remembered yet; the statements the
    server runs from now on are recorded in the list returned."""
    from santong.search import engine
    from santong.storage import repository

    monkeypatch.setattr(engine, "ORDERED_VALUES", 2)
    monkeypatch.setattr(engine, "_matches_cache", {})
    statements: list[str] = []
    execute = repository.Connection.execute

    async def recording(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(statement))
        return await execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(repository.Connection, "execute", recording)
    return statements


async def test_a_prefix_with_too_many_names_is_not_listed_again(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A prefix found to have too many distinct values for the page from the index (made so
    here: more than 2) goes to the other plans, and is not listed again while that is kept."""
    from santong.search import engine

    family = "寿" + unique("").replace("-", "")
    made = [(await client.post("Patient", json={
        "resourceType": "Patient", "name": [{"family": family + suffix}]})).json()["id"]
        for suffix in ("甲", "乙", "丙", "")]
    statements = _crowded_after_two_values(monkeypatch)
    for attempt in range(2):
        statements.clear()
        found = (await client.get("Patient", params={"family": family})).json()
        assert [e["resource"]["id"] for e in found["entry"]] == made
        listed = [s for s in statements if s.startswith("WITH RECURSIVE")]
        assert len(listed) == (1 if attempt == 0 else 0), statements
    assert any(key.startswith("values:") for key in engine._matches_cache)


async def test_a_crowded_prefix_is_remembered_for_its_own_value_only(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What is remembered of a crowded prefix is keyed by the search's SQL with its values:
    a value that looks like a numbered alias (`x5`) is kept as it is, so `family=x6` is not
    taken for the crowded `family=x5` (their keys were once the same)."""
    from santong.search import engine

    tag = unique("")
    crowded = [(await client.post("Patient", json={
        "resourceType": "Patient", "name": [{"family": f"x5 {suffix}{tag}"}]})).json()["id"]
        for suffix in ("甲", "乙", "丙")]
    alone = (await client.post("Patient", json={
        "resourceType": "Patient", "name": [{"family": f"x6 甲{tag}"}]})).json()["id"]
    statements = _crowded_after_two_values(monkeypatch)
    found = (await client.get("Patient", params={"family": "x5"})).json()
    assert set(crowded) <= {e["resource"]["id"] for e in found["entry"]}
    assert any(key.startswith("values:") for key in engine._matches_cache)
    statements.clear()
    found = (await client.get("Patient", params={"family": "x6"})).json()
    assert alone in {e["resource"]["id"] for e in found["entry"]}
    assert any(s.startswith("WITH RECURSIVE") for s in statements), statements


async def test_common_string_matches_walk_rids_in_order(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A string match with many index rows, when its values are not read in rid order (too
    many distinct ones, made so here), is paged by walking the type's rids in order
    (engine._dense, thresholds made small here); the pages are exactly those of the
    index-driven plan, which takes over when the walk finds less than a page."""
    from santong.search import engine

    family = "寿" + unique("").replace("-", "")  # a prefix no other test's patients share
    ids = [(await client.post("Patient", json={
        "resourceType": "Patient", "name": [{"family": family + suffix}]})).json()["id"]
        for suffix in ("", "", "甲", "乙", "", "丙", "", "")]  # in creation order
    await client.post("Patient", json={"resourceType": "Patient", "name": [{"family": "寿"}]})
    monkeypatch.setattr(engine, "ORDERED_VALUES", 0)

    async def pages(count: int) -> tuple[list[str], list[str]]:
        return await every_page(client, f"Patient?family={family}&_count={count}")

    monkeypatch.setattr(engine, "_dense_rows", lambda rows: 3)
    monkeypatch.setattr(engine, "_WALK_ROWS", 10**6)
    walked, sqls = await pages(3)
    assert walked == ids
    assert "LIMIT 1000000) r" in sqls[0]  # the first page came from the walk
    assert "(SELECT w.resource_type, w.id, w.rid, w.deleted FROM resource w" in sqls[0]
    assert "ORDER BY w.rid LIMIT 1000000" in sqls[0]
    assert "LIMIT 1000000) r" not in sqls[-1]  # the last (short) page did not
    assert "LIMIT 1), false)" not in sqls[0]  # 8 matches, not crowded: hashed once
    # Crowded (from _CROWDED × dense rows): the walk looks each row up in the index instead.
    monkeypatch.setattr(engine, "_CROWDED", 2)
    looked_up, sqls = await pages(3)
    assert looked_up == ids
    assert "LIMIT 1000000) r" in sqls[0] and "LIMIT 1), false)" in sqls[0]
    assert " IN (SELECT" not in sqls[0].split("LIMIT 1000000) r", 1)[1]
    monkeypatch.setattr(engine, "_CROWDED", 10)
    monkeypatch.setattr(engine, "_dense_rows", lambda rows: 10**6)  # never dense
    plain, sqls = await pages(3)
    assert plain == ids and not any("LIMIT 1000000) r" in s for s in sqls)
    monkeypatch.setattr(engine, "_dense_rows", lambda rows: 3)
    monkeypatch.setattr(engine, "_WALK_ROWS", 1)  # the walk too short: falls back at once
    assert (await pages(3))[0] == ids
    # With another condition the count alone does not decide: a sample of the walk must find
    # the whole search dense. One match cannot be; all eight (a sample of everything) are.
    monkeypatch.setattr(engine, "_WALK_ROWS", 10**6)
    one, sqls = await every_page(client, f"Patient?family={family}&_id={ids[3]}&_count=3")
    assert one == [ids[3]] and not any("LIMIT 1000000) r" in sql for sql in sqls)
    monkeypatch.setattr(engine, "_SAMPLE_ROWS", 10**6)
    every, sqls = await every_page(client, f"Patient?family={family}&gender:missing=true"
                                           "&_count=3")
    assert every == ids and "LIMIT 1000000) r" in sqls[0]
    # A test on a column the key index lacks walks whole rows (and finds the same pages).
    every, sqls = await every_page(client, f"Patient?family={family}&_lastUpdated=gt2000"
                                           "&_count=3")
    assert every == ids and "(SELECT * FROM resource w" in sqls[0]


async def test_dense_has_walks_rids_testing_each_row(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `_has` that a sample of the walk finds dense is paged by walking ids and testing
    each row (engine._dense, forced here); every page equals the index-driven plan's, for a
    token, a string and a nested `_has`, with repeated and deleted sources."""
    from santong.search import engine

    code, text, nested = unique("dx"), "寿" + unique("v"), unique("nx")
    system = "urn:santong:test:dx"
    patients = [(await client.post("Patient", json={"resourceType": "Patient"})).json()["id"]
                for _ in range(7)]

    async def post(resource: dict[str, Any]) -> str:
        response = await client.post(resource["resourceType"], json=resource)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def condition(patient: str, value: str, **extra: Any) -> dict[str, Any]:
        return {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
                "code": {"coding": [{"system": system, "code": value}]}, **extra}

    for patient in (patients[0], patients[2], patients[3], patients[3], patients[5]):
        await post(condition(patient, code))
    gone = await post(condition(patients[6], code))
    assert (await client.delete(f"Condition/{gone}")).status_code in (200, 204)
    for patient in (patients[1], patients[2], patients[4]):
        await post({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{patient}"},
                    "valueString": text + "甲"})
    for patient in (patients[4], patients[6]):
        encounter = await post({"resourceType": "Encounter", "status": "finished",
                                "class": {"code": "AMB"},
                                "subject": {"reference": f"Patient/{patient}"}})
        await post(condition(patient, nested, encounter={"reference": f"Encounter/{encounter}"}))

    async def pages(query: str) -> tuple[list[str], list[str]]:
        return await every_page(client, f"Patient?{query}&_count=1")

    cases = {
        f"_has:Condition:subject:code={system}|{code}": [0, 2, 3, 5],
        f"_has:Observation:subject:value-string={text}": [1, 2, 4],
        f"_has:Encounter:subject:_has:Condition:encounter:code={nested}": [4, 6],
    }
    for query, expected in cases.items():
        wanted = [patients[n] for n in expected]  # creation order, the default
        monkeypatch.setattr(engine, "_SAMPLE_MATCHES", 0)  # always dense
        monkeypatch.setattr(engine, "_WALK_ROWS", 10**6)
        walked, sqls = await pages(query)
        assert walked == wanted, query
        assert "LIMIT 1000000) r" in sqls[0] and "LIMIT 1) IS TRUE" in sqls[0], query
        monkeypatch.setattr(engine, "_SAMPLE_MATCHES", 10**9)  # never dense
        plain, sqls = await pages(query)
        assert plain == wanted, query
        assert not any("LIMIT 1000000) r" in sql for sql in sqls), query


async def test_date_bounds_are_written_into_the_sql(client: httpx.AsyncClient) -> None:
    """Date bounds go into the SQL as literals, not parameters: a prepared statement's generic
    plan cannot see how many rows a range selects and read every Encounter before its end."""
    explained = (await client.get("Encounter", params=[
        ("date", "ge2025-01-01"), ("date", "lt2025-02-01T08:00:00+08:00"),
        ("_explain", "true")])).json()
    sql = next(p["valueString"] for p in explained["parameter"] if p["name"] == "sql")
    assert "x1.low >= '2025-01-01T00:00:00+00:00'::timestamptz" in sql
    assert "low < '2025-02-01T00:00:00+00:00'::timestamptz" in sql


async def test_a_two_sided_date_range_starts_from_the_spans_near_it(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both bounds of a range (or one value's: `date=2025-01`) let the search start from the
    spans near the window when they are few (the test data's are); otherwise the plan is left
    to PostgreSQL. One bound alone never narrows."""
    from santong.search import engine

    async def sql(*params: tuple[str, str]) -> str:
        explained = (await client.get("Encounter", params=[*params, ("_explain", "true")])).json()
        return next(p["valueString"] for p in explained["parameter"] if p["name"] == "sql")

    narrowing = "AND r.rid = ANY(ARRAY(SELECT n.rid FROM unnest("
    assert narrowing in await sql(("date", "ge2025-01-01"), ("date", "lt2025-02-01"))
    assert narrowing in await sql(("date", "2025-01"))
    assert narrowing in await sql(("date", "ap2025-01-10"))
    assert narrowing not in await sql(("date", "ge2025-01-01"))
    assert narrowing not in await sql(("date", "ne2025-01"), ("date", "lt2025-02-01"))
    monkeypatch.setattr(engine, "_NARROW_ROWS", 0)  # as if the window held many spans
    assert narrowing not in await sql(("date", "ge2025-01-01"), ("date", "lt2025-02-01"))


async def test_a_windows_span_count_is_kept_a_while(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spans near a window are counted once and the count kept (it only chooses the
    plan): the same window searched again costs one statement, not two. The page is the
    same either way, and a resource written since is found (results are never cached)."""
    from santong.search import engine

    counted: list[str] = []
    count_up_to = engine._count_up_to

    async def counting(connection: Any, rows: str, limit: int, binds: dict[str, Any],
                       custom_plan: bool = False) -> int:
        counted.append(rows)
        return await count_up_to(connection, rows, limit, binds, custom_plan)

    monkeypatch.setattr(engine, "_count_up_to", counting)
    subject = (await client.post("Patient", json={"resourceType": "Patient"})).json()["id"]

    async def encounter(day: str) -> str:
        created = await client.post("Encounter", json={
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{subject}"},
            "period": {"start": f"2031-03-{day}T09:00:00Z", "end": f"2031-03-{day}T10:00:00Z"}})
        return str(created.json()["id"])

    window = [("date", "ge2031-03-01"), ("date", "lt2031-04-01"), ("subject", subject)]
    first = await encounter("03")
    found = (await client.get("Encounter", params=window)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [first]
    spans = [rows for rows in counted if "unnest" in rows]
    assert len(spans) == 1
    second = await encounter("04")
    found = (await client.get("Encounter", params=window)).json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([first, second])
    assert [rows for rows in counted if "unnest" in rows] == spans  # not counted again


async def test_last_updated_ranges_read_the_last_updated_index(
    client: httpx.AsyncClient, database_url: str,
) -> None:
    """`_lastUpdated=gt…` (an integration polling for changes) reads the type's range of the
    index from migration 0008, not every resource of the type: with a few thousand of them,
    analysed, the planner takes it."""
    from tests.helpers import admin

    kind = "Linkage"  # a type no other test writes: these rows exist only in this test
    await admin(database_url, "INSERT INTO resource (resource_type, id, version_id,"
                f" last_updated, content) SELECT '{kind}', 'bulk-' || n, 1,"
                " timestamptz '2020-01-01' + n * interval '1 minute',"
                f" '{{\"resourceType\": \"{kind}\", \"id\": \"bulk-' || n || '\"}}'"
                " FROM generate_series(1, 5000) AS n")
    try:
        await admin(database_url, "ANALYZE resource")
        explained = (await client.get(kind, params=[
            ("_lastUpdated", "gt2100-01-01"), ("_explain", "true")])).json()
        plan = next(p["valueString"] for p in explained["parameter"] if p["name"] == "plan")
        assert "resource_last_updated_idx" in plan, plan
        found = (await client.get(kind, params={"_lastUpdated": "ge2020-01-04T02:59:00Z",
                                                "_total": "accurate"})).json()
        assert found["total"] == 502  # minutes 4,499 to 5,000
        assert [e["resource"]["id"] for e in found["entry"]][:2] == ["bulk-4499", "bulk-4500"]
        # The newest first: read from the index's end, not a sort of every row.
        explained = (await client.get(kind, params=[
            ("_sort", "-_lastUpdated"), ("_count", "3"), ("_explain", "true")])).json()
        plan = next(p["valueString"] for p in explained["parameter"] if p["name"] == "plan")
        assert "Index Scan Backward using resource_last_updated_idx" in plan, plan
        newest = (await client.get(kind, params={"_sort": "-_lastUpdated", "_count": "3"}))
        assert [e["resource"]["id"] for e in newest.json()["entry"]] == [
            "bulk-5000", "bulk-4999", "bulk-4998"]
    finally:
        await admin(database_url, f"DELETE FROM resource WHERE resource_type = '{kind}'")


async def test_last_updated_prefixes_at_the_millisecond(client: httpx.AsyncClient) -> None:
    """lastUpdated is an instant: the range of its millisecond, compared by each prefix with
    the search value's own range (search.html#prefix), at the edges either side."""
    from datetime import UTC, datetime, timedelta

    tag = unique("stamp")
    created = await client.post("Basic", json={
        "resourceType": "Basic", "code": {"text": "stamp"},
        "meta": {"tag": [{"system": TAG, "code": tag}]}})
    assert created.status_code == 201, created.text
    stamp = created.json()["meta"]["lastUpdated"]
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    assert moment.microsecond % 1000 == 0
    target = (moment, moment + timedelta(milliseconds=1))

    def written(at: datetime, unit: str) -> tuple[str, tuple[datetime, datetime]]:
        """A search value at `unit` precision with the range it stands for."""
        if unit == "ms":
            start, width = at, timedelta(milliseconds=1)
            return start.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z", (
                start, start + width)
        if unit == "s":
            start = at.replace(microsecond=0)
            return start.strftime("%Y-%m-%dT%H:%M:%SZ"), (start, start + timedelta(seconds=1))
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), (start, start + timedelta(days=1))

    def oracle(prefix: str, search: tuple[datetime, datetime]) -> bool:
        (sl, sh), (tl, th) = search, target
        contained = sl <= tl and th <= sh
        return {"eq": contained, "ne": not contained, "gt": th > sh, "lt": tl < sl,
                "ge": th > sh or contained, "le": tl < sl or contained,
                "sa": tl >= sh, "eb": th <= sl}[prefix]

    one = timedelta(milliseconds=1)
    values = [written(at, unit) for at in (moment - one, moment, moment + one)
              for unit in ("ms", "s", "day")]
    checked = 0
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        for text, search in values:
            found = await ids(client, tag, "Basic", {"_lastUpdated": prefix + text})
            assert (found == {created.json()["id"]}) == oracle(prefix, search), (prefix, text)
            checked += oracle(prefix, search)
    assert 20 < checked < 60, checked  # both outcomes are exercised
    for extreme in ("eb0001-01-01", "lt0001", "sa9999-12-31", "gt9999"):
        assert await ids(client, tag, "Basic", {"_lastUpdated": extreme}) == set(), extreme


def _great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine on a sphere of the Earth's mean radius, for the `near` oracle."""
    import math

    (lat1, lon1), (lat2, lon2) = [(math.radians(x), math.radians(y)) for x, y in (a, b)]
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


async def put_locations(client: httpx.AsyncClient, tag: str,
                        sites: dict[str, tuple[float, float]]) -> None:
    """A tagged Location `{tag}-{name}` at each (latitude, longitude)."""
    for name, (lat, lon) in sites.items():
        response = await client.put(f"Location/{tag}-{name}", json={
            "resourceType": "Location", "id": f"{tag}-{name}", "name": name,
            "meta": {"tag": [{"system": TAG, "code": tag}]},
            "position": {"latitude": lat, "longitude": lon}})
        assert response.status_code == 201, response.text


async def test_near_matches_report_their_distance(client: httpx.AsyncClient) -> None:
    """A match found with `near` carries the location-distance extension on its
    Bundle.entry.search: the distance from the nearest point searched, in that point's units
    (UCUM); other searches, `near:missing` and included resources carry none."""
    tag = unique("dist")
    at = {"clinic": (30.02, 120.0), "centre": (30.1, 120.1)}
    await put_locations(client, tag, at)

    async def distances(params: dict[str, str]) -> dict[str, Any]:
        response = await client.get("Location", params={"_tag": f"{TAG}|{tag}", **params})
        assert response.status_code == 200, response.text
        return {e["resource"]["id"].removeprefix(f"{tag}-"): e["search"].get("extension")
                for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}

    url = "http://hl7.org/fhir/StructureDefinition/location-distance"
    found = await distances({"near": "30|120|20|km"})
    assert set(found) == {"clinic", "centre"}
    for name, extensions in found.items():
        assert [e["url"] for e in extensions] == [url]
        distance = extensions[0]["valueDistance"]
        assert (distance["unit"], distance["code"], distance["system"]) == (
            "km", "km", "http://unitsofmeasure.org")
        assert distance["value"] == pytest.approx(_great_circle_km((30, 120), at[name]),
                                                  abs=1e-5)
    assert 2.2 < found["clinic"][0]["valueDistance"]["value"] < 2.3
    # Metres; and with two points, the distance from the nearer one, in its units.
    metres = (await distances({"near": "30|120|3000|m"}))["clinic"][0]["valueDistance"]
    assert metres["code"] == "m" and 2200 < metres["value"] < 2300
    two = await distances({"near": "30|120|2|[mi_i],30.1|120.1|1|km"})
    assert two["centre"][0]["valueDistance"] == {
        "value": 0.0, "unit": "km", "system": "http://unitsofmeasure.org", "code": "km"}
    assert two["clinic"][0]["valueDistance"]["code"] == "[mi_i]"
    assert two["clinic"][0]["valueDistance"]["value"] == pytest.approx(
        _great_circle_km((30, 120), at["clinic"]) / 1.609344, abs=1e-5)
    assert await distances({"name": "clinic"}) == {"clinic": None}
    assert set((await distances({"near:missing": "false"})).values()) == {None}


async def test_near_finds_locations_within_the_distance(client: httpx.AsyncClient) -> None:
    """`near=latitude|longitude|distance|units` on Location.position: what lies within that
    great-circle distance (km unless units say otherwise), across ±180° and near a pole too;
    malformed values are a 400 naming the parameter."""
    tag = unique("near")
    sites = {
        "county": (30.0, 120.0), "township": (30.02, 120.0), "village": (30.1, 120.1),
        "remote": (31.0, 121.0), "east": (0.0, 179.99), "west": (0.0, -179.99),
        "north": (89.99, 10.0), "pole": (89.99, -170.0),
    }
    await put_locations(client, tag, sites)
    nowhere = await client.put(f"Location/{tag}-nowhere", json={
        "resourceType": "Location", "id": f"{tag}-nowhere", "name": "no position",
        "meta": {"tag": [{"system": TAG, "code": tag}]}})
    assert nowhere.status_code == 201

    cases = [((30.0, 120.0), 5, "km"), ((30.0, 120.0), 20, "km"), ((30.0, 120.0), 2000, "m"),
             ((30.0, 120.0), 10, "[mi_i]"), ((30.0, 120.0), 200, "km"),
             ((0.0, -179.995), 5, "km"), ((89.995, 100.0), 5, "km"), ((0.0, 0.0), 1, "km"),
             ((0.0, 0.0), 19000, "km"), ((-60.0, 30.0), 14000, "km")]
    factor = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344}
    for (lat, lon), distance, units in cases:
        want = {f"{tag}-{n}" for n, at in sites.items()
                if _great_circle_km((lat, lon), at) <= distance * factor[units]}
        found = await ids(client, tag, "Location", {"near": f"{lat}|{lon}|{distance}|{units}"})
        assert found == want, ((lat, lon), distance, units)
    assert len({frozenset(await ids(client, tag, "Location",
                                    {"near": f"30|120|{d}|km"})) for d in (1, 5, 20, 200)}) == 4
    # No distance: the server's default (5 km); no units: km; alternatives ORed.
    assert await ids(client, tag, "Location", {"near": "30|120"}) == {
        f"{tag}-county", f"{tag}-township"}
    assert await ids(client, tag, "Location", {"near": "30.1|120.1|1"}) == {f"{tag}-village"}
    assert await ids(client, tag, "Location", {"near": "30.1|120.1|1,0|179.99|1"}) == {
        f"{tag}-village", f"{tag}-east"}
    assert await ids(client, tag, "Location", {"near:missing": "true"}) == {f"{tag}-nowhere"}
    for bad in ("30", "abc|120", "91|0|1|km", "30|181", "30|120|-1|km", "30|120|5|furlong",
                "30|120|nan|km"):
        response = await client.get("Location", params={"near": bad})
        assert response.status_code == 400, bad
        assert response.json()["issue"][0]["expression"] == ["near"], bad


async def _plans_after_runs(url: str, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    """(generic, custom) plans PostgreSQL made for `sql` prepared once and run eight times."""
    import asyncpg

    from santong.storage.database import asyncpg_connect_args
    from santong.storage.repository import _to_positional

    positional, names = _to_positional(sql)
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        statement = await connection.prepare(positional)
        for _ in range(8):
            await statement.fetch(*(params[name] for name in names))
        row = await connection.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement = $1", positional)
        return row[0], row[1]
    finally:
        await connection.close()


@pytest.fixture
def references_database(empty_database: str) -> str:
    """A migrated database of its own with 20,000 Patients and 100,000 Encounters' subject
    rows (analysed): enough rows that an index probe costs the planner what it does at scale."""
    from alembic import command

    from santong.storage.migrate import alembic_config

    command.upgrade(alembic_config(empty_database), "head")
    asyncio.run(admin(
        empty_database,
        "INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content)"
        " SELECT t, t || i, 1, now(), false, '{}' FROM generate_series(0, 99999) i,"
        " LATERAL (SELECT CASE WHEN i < 20000 THEN 'Patient' ELSE 'Encounter' END AS t) x",
        "INSERT INTO search_reference (rid, resource_type, code, target_type, target_id)"
        " SELECT rid, 'Encounter', 'subject', 'Patient', 'Patient' || (rid % 20000)"
        " FROM resource WHERE resource_type = 'Encounter'",
        "VACUUM ANALYZE"))
    return empty_database


def test_include_statements_settle_on_a_generic_plan(references_database: str) -> None:
    """The include statements' arrays are hidden from the planner (query.opaque): after its
    five trial runs PostgreSQL keeps the generic plan instead of planning every run. With the
    rids bound plainly it goes on planning each run (the control)."""
    from santong.search import engine

    url = references_database
    rids = list(range(20001, 20005))
    common = {"source": "Encounter", "codes": ["subject"], "target": None, "limit": 1000}
    include = {**common, "rids": rids}
    revinclude = {**common, "types": ["Patient"], "ids": ["Patient7"]}
    generic, _ = asyncio.run(_plans_after_runs(url, engine._INCLUDE.text, include))
    assert generic >= 3
    generic, _ = asyncio.run(_plans_after_runs(
        url, engine._revinclude_sql("Encounter", ("subject",)), revinclude))
    assert generic >= 3
    plain = engine._INCLUDE.text.replace(
        "ANY(CAST((SELECT CAST(:rids AS bigint[])) AS bigint[]))", "ANY(:rids)")
    assert plain != engine._INCLUDE.text
    assert asyncio.run(_plans_after_runs(url, plain, include)) == (0, 8)


def test_conditional_create_criteria_settle_on_a_generic_plan(references_database: str) -> None:
    """A Bundle's `identifier=system|value` criteria are one LATERAL over arrays of their
    values (storage.repository.current_each_statement), the arrays hidden from the planner:
    PostgreSQL keeps its generic plan after the five trial runs, where the statement built for
    the values (a UNION ALL) was parsed and planned for every Bundle. With the arrays bound
    plainly it plans every run (the control)."""
    import re

    from santong.search.query import Compiler
    from santong.storage.repository import current_each_statement

    asyncio.run(admin(
        references_database,
        "INSERT INTO search_token (rid, resource_type, code, system, value) SELECT rid,"
        " 'Patient', 'identifier', 'urn:oid:2.16.156.10011.1.3', 'id' || rid"
        " FROM resource WHERE resource_type = 'Patient'",
        "VACUUM ANALYZE search_token"))
    searches = [("Patient", Compiler("http://x/fhir").compile(
        "Patient", [("identifier", f"urn:oid:2.16.156.10011.1.3|id{rid}")],
        strict=True).conditions) for rid in (5, 17, 999999)]
    sql, params, one_off = current_each_statement(searches, 2)
    assert not one_off and sql.count("CROSS JOIN LATERAL") == 1
    generic, _ = asyncio.run(_plans_after_runs(references_database, sql, params))
    assert generic >= 3
    plain = re.sub(r"CAST\(\(SELECT CAST\((:\w+) AS ([\w\[\]]+)\)\) AS [\w\[\]]+\)",
                   r"CAST(\1 AS \2)", sql)
    assert plain != sql
    assert asyncio.run(_plans_after_runs(references_database, plain, params)) == (0, 8)
