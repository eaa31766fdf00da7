"""Terminology operations over stored definitions (http://hl7.org/fhir/R4/terminology-service.html):
ValueSet $expand and $validate-code, CodeSystem $lookup and $validate-code, ConceptMap
$translate — parameters in and out, and the OperationOutcomes of bad requests."""

from __future__ import annotations

from typing import Any

import httpx
from tests.helpers import expressions, unique

BASE = "http://santong.example/fhir"
ICD10 = "urn:oid:2.16.156.10011.2.3.3.11"


class Terms:
    """One test's definitions, under urls of their own."""

    def __init__(self) -> None:
        self.tag = unique("tx")
        self.cs = f"{BASE}/CodeSystem/{self.tag}"

    def vs(self, name: str) -> str:
        return f"{BASE}/ValueSet/{self.tag}-{name}"

    def resources(self) -> list[dict[str, Any]]:
        cs, t = self.cs, self.tag
        return [
            {"resourceType": "CodeSystem", "id": f"{t}-cs", "url": cs, "version": "2024",
             "name": "ChronicDisease", "title": "慢病分类", "status": "active",
             "content": "complete", "hierarchyMeaning": "is-a",
             "property": [{"code": "inactive", "type": "boolean"},
                          {"code": "grade", "type": "integer"}],
             "concept": [
                 {"code": "CVD", "display": "心血管病", "concept": [
                     {"code": "HTN", "display": "高血压", "definition": "收缩压≥140或舒张压≥90",
                      "designation": [{"language": "en", "value": "Hypertension"}],
                      "concept": [
                          {"code": "HTN1", "display": "高血压1级",
                           "property": [{"code": "grade", "valueInteger": 1}]},
                          {"code": "HTN2", "display": "高血压2级",
                           "property": [{"code": "grade", "valueInteger": 2}]}]},
                     {"code": "CHD", "display": "冠心病"}]},
                 {"code": "DM", "display": "糖尿病", "concept": [
                     {"code": "T2DM", "display": "2型糖尿病"}]},
                 # a flat child, by the parent property
                 {"code": "HTN3", "display": "高血压3级",
                  "property": [{"code": "parent", "valueCode": "HTN"},
                               {"code": "grade", "valueInteger": 3}]},
                 {"code": "OLD", "display": "旧分类",
                  "property": [{"code": "inactive", "valueBoolean": True}]}]},
            {"resourceType": "ValueSet", "id": f"{t}-htn", "url": self.vs("htn"),
             "status": "active", "compose": {"include": [
                 {"system": cs, "filter": [{"property": "concept", "op": "is-a",
                                            "value": "HTN"}]}]}},
            {"resourceType": "ValueSet", "id": f"{t}-chronic", "url": self.vs("chronic"),
             "version": "1", "status": "active", "compose": {
                 "include": [{"valueSet": [self.vs("htn")]},
                             {"system": cs, "concept": [{"code": "T2DM"}, {"code": "CHD"}]}],
                 "exclude": [{"system": cs, "concept": [{"code": "HTN2"}]}]}},
            {"resourceType": "ValueSet", "id": f"{t}-below", "url": self.vs("below"),
             "status": "active", "compose": {"include": [
                 {"system": cs, "filter": [
                     {"property": "concept", "op": "descendent-of", "value": "CVD"},
                     {"property": "grade", "op": "in", "value": "1,3"}]}]}},
            {"resourceType": "ValueSet", "id": f"{t}-all", "url": self.vs("all"),
             "status": "active", "compose": {"include": [{"system": cs}]}},
            {"resourceType": "ValueSet", "id": f"{t}-icd", "url": self.vs("icd"),
             "status": "active", "compose": {"include": [{"system": ICD10}]}},
            {"resourceType": "ConceptMap", "id": f"{t}-map", "url": f"{BASE}/ConceptMap/{t}",
             "status": "active", "sourceUri": self.vs("all"), "group": [
                 {"source": cs, "target": ICD10, "element": [
                     {"code": "HTN", "target": [{"code": "I10", "display": "特发性高血压",
                                                 "equivalence": "equivalent"}]},
                     {"code": "CHD", "target": [{"code": "I25.1", "equivalence": "wider"},
                                                 {"code": "I20", "equivalence": "narrower",
                                                  "comment": "angina only"}]},  # cmd-1
                     {"code": "OLD", "target": [{"equivalence": "unmatched"}]}]},
                 {"source": cs, "target": f"{BASE}/CodeSystem/{t}-legacy",
                  "element": [{"code": "DM", "target": [{"code": "D1",
                                                        "equivalence": "equivalent"}]}],
                  "unmapped": {"mode": "provided"}}]},
        ]


async def load(client: httpx.AsyncClient) -> Terms:
    terms = Terms()
    for resource in terms.resources():
        response = await client.put(f"{resource['resourceType']}/{resource['id']}",
                                    json=resource)
        assert response.status_code == 201, response.text
    return terms


def codes(value_set: dict[str, Any]) -> list[str]:
    return [c["code"] for c in value_set["expansion"].get("contains", [])]


def out(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters → {name: value} (repeats as lists of values or parts)."""
    assert parameters["resourceType"] == "Parameters", parameters
    result: dict[str, Any] = {}
    for p in parameters["parameter"]:
        value = p.get("part") or next(v for k, v in p.items() if k.startswith("value"))
        if p["name"] in ("match", "property", "designation"):
            result.setdefault(p["name"], []).append(value)
        else:
            result[p["name"]] = value
    return result


def parts(part: list[dict[str, Any]]) -> dict[str, Any]:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in part}


# ---- $expand ---------------------------------------------------------------------------------

async def test_expand_by_url_filter_and_paging(client: httpx.AsyncClient) -> None:
    t = await load(client)
    response = await client.get("ValueSet/$expand", params={"url": t.vs("htn")})
    assert response.status_code == 200, response.text
    expanded = response.json()
    assert expanded["resourceType"] == "ValueSet" and expanded["url"] == t.vs("htn")
    assert codes(expanded) == ["HTN", "HTN1", "HTN2", "HTN3"]
    assert expanded["expansion"]["total"] == 4
    assert expanded["expansion"]["contains"][1] == {
        "system": t.cs, "version": "2024", "code": "HTN1", "display": "高血压1级"}
    assert expanded["expansion"]["identifier"].startswith("urn:uuid:")
    used = [p["valueUri"] for p in expanded["expansion"]["parameter"]
            if p["name"] == "used-codesystem"]
    assert used == [f"{t.cs}|2024"]

    page = (await client.get("ValueSet/$expand", params={
        "url": t.vs("htn"), "offset": "1", "count": "2"})).json()["expansion"]
    assert [c["code"] for c in page["contains"]] == ["HTN1", "HTN2"]
    assert (page["total"], page["offset"]) == (4, 1)

    filtered = (await client.get("ValueSet/$expand", params={
        "url": t.vs("all"), "filter": "糖尿"})).json()
    assert codes(filtered) == ["DM", "T2DM"]
    english = (await client.get("ValueSet/$expand", params={
        "url": t.vs("all"), "filter": "hyperTENSION"})).json()
    assert codes(english) == ["HTN"]


async def test_expand_compose_rules(client: httpx.AsyncClient) -> None:
    t = await load(client)

    async def expand(name: str, **extra: str) -> list[str]:
        response = await client.get("ValueSet/$expand", params={"url": t.vs(name), **extra})
        assert response.status_code == 200, response.text
        return codes(response.json())

    # imported value set ∪ concept list, less the excluded code
    assert await expand("chronic") == ["HTN", "HTN1", "HTN3", "T2DM", "CHD"]
    # filters are ANDed: below CVD (nested and by the parent property) with grade 1 or 3
    assert await expand("below") == ["HTN1", "HTN3"]
    everything = await expand("all")
    assert everything == ["CVD", "HTN", "HTN1", "HTN2", "CHD", "DM", "T2DM", "HTN3", "OLD"]
    assert "OLD" not in await expand("all", activeOnly="true")


async def test_expand_instance_and_post(client: httpx.AsyncClient) -> None:
    t = await load(client)
    instance = await client.get(f"ValueSet/{t.tag}-htn/$expand", params={"count": "1"})
    assert instance.status_code == 200
    assert codes(instance.json()) == ["HTN"]

    posted = await client.post("ValueSet/$expand", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": t.vs("chronic")},
            {"name": "valueSetVersion", "valueString": "1"},
            {"name": "count", "valueInteger": 2}]})
    assert posted.status_code == 200, posted.text
    assert codes(posted.json()) == ["HTN", "HTN1"]

    inline = await client.post("ValueSet/$expand", json={
        "resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {
            "resourceType": "ValueSet", "status": "draft", "compose": {"include": [
                {"system": t.cs, "concept": [{"code": "DM", "display": "糖尿病（自定义）"}]}]}}}]})
    assert inline.status_code == 200, inline.text
    assert inline.json()["expansion"]["contains"][0]["display"] == "糖尿病（自定义）"


async def test_expand_errors_name_the_parameter(client: httpx.AsyncClient) -> None:
    t = await load(client)
    missing = await client.get("ValueSet/$expand")
    assert missing.status_code == 400
    assert expressions(missing) == ["url"]

    unknown = await client.get("ValueSet/$expand", params={"url": f"{BASE}/ValueSet/none"})
    assert unknown.status_code == 404
    assert expressions(unknown) == ["url"]

    wrong_version = await client.get("ValueSet/$expand", params={
        "url": t.vs("chronic"), "valueSetVersion": "9"})
    assert wrong_version.status_code == 404

    bad_count = await client.get("ValueSet/$expand", params={"url": t.vs("htn"),
                                                             "count": "-1"})
    assert bad_count.status_code == 400
    assert expressions(bad_count) == ["count"]

    # every ICD-10 code: not stored here, so not enumerable
    whole = await client.get("ValueSet/$expand", params={"url": t.vs("icd")})
    assert whole.status_code == 422
    assert whole.json()["issue"][0]["code"] == "too-costly"

    assert (await client.get("ValueSet/nope/$expand")).status_code == 404
    wrong_type = await client.get("Patient/$expand")
    assert wrong_type.status_code == 400
    assert "ValueSet" in wrong_type.json()["issue"][0]["diagnostics"]

    not_parameters = await client.post("ValueSet/$expand", json={"resourceType": "Patient"})
    assert not_parameters.status_code == 400


# ---- $validate-code --------------------------------------------------------------------------

async def test_value_set_validate_code(client: httpx.AsyncClient) -> None:
    t = await load(client)

    async def validate(**params: str) -> dict[str, Any]:
        response = await client.get("ValueSet/$validate-code",
                                    params={"url": t.vs("chronic"), **params})
        assert response.status_code == 200, response.text
        return out(response.json())

    valid = await validate(system=t.cs, code="HTN1")
    assert valid == {"result": True, "display": "高血压1级"}
    excluded = await validate(system=t.cs, code="HTN2")
    assert excluded["result"] is False and "HTN2" in excluded["message"]
    unknown = await validate(system=t.cs, code="NOPE")
    assert unknown["result"] is False and "Unknown code" in unknown["message"]
    wrong_display = await validate(system=t.cs, code="T2DM", display="1型糖尿病")
    assert wrong_display["result"] is False
    assert wrong_display["display"] == "2型糖尿病"
    designation = await validate(system=t.cs, code="HTN", display="Hypertension")
    assert designation["result"] is True
    assert (await validate(coding=f"{t.cs}|CHD"))["result"] is True

    concept = await client.post(f"ValueSet/{t.tag}-chronic/$validate-code", json={
        "resourceType": "Parameters", "parameter": [{"name": "codeableConcept",
            "valueCodeableConcept": {"coding": [{"system": ICD10, "code": "I10"},
                                                {"system": t.cs, "code": "HTN3"}]}}]})
    assert out(concept.json())["result"] is True

    # a whole system not stored here: membership by system, the code itself unchecked
    icd = out((await client.get("ValueSet/$validate-code", params={
        "url": t.vs("icd"), "system": ICD10, "code": "I10"})).json())
    assert icd["result"] is True and "not stored" in icd["message"]

    no_code = await client.get("ValueSet/$validate-code", params={"url": t.vs("chronic")})
    assert no_code.status_code == 400
    assert expressions(no_code) == ["code"]
    both = await client.get("ValueSet/$validate-code", params={
        "url": t.vs("chronic"), "code": "HTN", "coding": f"{t.cs}|HTN"})
    assert both.status_code == 400
    assert expressions(both) == ["coding"]
    get_concept = await client.get("ValueSet/$validate-code", params={
        "url": t.vs("chronic"), "codeableConcept": "x"})
    assert get_concept.status_code == 400
    assert expressions(get_concept) == ["codeableConcept"]


async def test_code_system_validate_code(client: httpx.AsyncClient) -> None:
    t = await load(client)
    ok = await client.get("CodeSystem/$validate-code", params={"url": t.cs, "code": "T2DM"})
    assert out(ok.json()) == {"result": True, "display": "2型糖尿病"}
    instance = await client.get(f"CodeSystem/{t.tag}-cs/$validate-code", params={"code": "X"})
    assert out(instance.json())["result"] is False
    other = await client.post("CodeSystem/$validate-code", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": t.cs},
            {"name": "coding", "valueCoding": {"system": ICD10, "code": "I10"}}]})
    assert out(other.json())["result"] is False
    unknown = await client.get("CodeSystem/$validate-code", params={
        "url": f"{BASE}/CodeSystem/none", "code": "X"})
    assert unknown.status_code == 404
    assert expressions(unknown) == ["url"]


# ---- $lookup ---------------------------------------------------------------------------------

async def test_lookup(client: httpx.AsyncClient) -> None:
    t = await load(client)
    response = await client.get("CodeSystem/$lookup", params={"system": t.cs, "code": "HTN"})
    assert response.status_code == 200, response.text
    found = out(response.json())
    assert (found["name"], found["version"], found["display"]) == ("慢病分类", "2024", "高血压")
    assert found["definition"] == "收缩压≥140或舒张压≥90"
    assert [parts(d) for d in found["designation"]] == [{"language": "en",
                                                         "value": "Hypertension"}]
    properties = [(p["code"], p["value"]) for p in map(parts, found["property"])]
    assert properties == [("parent", "CVD"), ("child", "HTN1"), ("child", "HTN2"),
                          ("child", "HTN3")]

    flat = out((await client.post("CodeSystem/$lookup", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "coding", "valueCoding": {"system": t.cs, "code": "HTN3"}},
            {"name": "property", "valueCode": "parent"},
            {"name": "property", "valueCode": "grade"}]})).json())
    assert [(p["code"], p["value"]) for p in map(parts, flat["property"])] == [
        ("parent", "HTN"), ("grade", 3)]

    unknown_code = await client.get("CodeSystem/$lookup", params={"system": t.cs, "code": "X"})
    assert unknown_code.status_code == 404
    assert expressions(unknown_code) == ["code"]
    unknown_system = await client.get("CodeSystem/$lookup", params={
        "system": f"{BASE}/CodeSystem/none", "code": "X"})
    assert unknown_system.status_code == 404
    assert expressions(unknown_system) == ["system"]
    no_system = await client.get("CodeSystem/$lookup", params={"code": "HTN"})
    assert no_system.status_code == 400
    assert expressions(no_system) == ["system"]
    no_code = await client.get("CodeSystem/$lookup", params={"system": t.cs})
    assert no_code.status_code == 400
    assert expressions(no_code) == ["code"]
    assert (await client.get("ValueSet/$lookup")).status_code == 400


# ---- $translate ------------------------------------------------------------------------------

async def test_translate(client: httpx.AsyncClient) -> None:
    t = await load(client)
    url = f"{BASE}/ConceptMap/{t.tag}"

    async def translate(**params: str) -> dict[str, Any]:
        response = await client.get("ConceptMap/$translate", params=params)
        assert response.status_code == 200, response.text
        return out(response.json())

    htn = await translate(url=url, system=t.cs, code="HTN")
    assert htn["result"] is True
    assert [parts(m) for m in htn["match"]] == [
        {"equivalence": "equivalent", "source": url,
         "concept": {"system": ICD10, "code": "I10", "display": "特发性高血压"}},
        # the second group maps what it does not list to the same code
        {"equivalence": "equal", "source": url,
         "concept": {"system": f"{BASE}/CodeSystem/{t.tag}-legacy", "code": "HTN"}}]

    # without a url, every stored map from the system; targetsystem narrows the groups
    chd = await translate(system=t.cs, code="CHD", targetsystem=ICD10)
    assert [(parts(m)["equivalence"], parts(m)["concept"]["code"]) for m in chd["match"]] == [
        ("wider", "I25.1"), ("narrower", "I20")]
    # unmapped mode "provided": the same code in the legacy system
    provided = await translate(url=url, system=t.cs, code="HTN1",
                               targetsystem=f"{BASE}/CodeSystem/{t.tag}-legacy")
    assert parts(provided["match"][0])["equivalence"] == "equal"
    assert parts(provided["match"][0])["concept"]["code"] == "HTN1"

    unmatched = await translate(url=url, system=t.cs, code="OLD", targetsystem=ICD10)
    assert unmatched["result"] is False
    assert [parts(m)["equivalence"] for m in unmatched["match"]] == ["unmatched"]
    nothing = await translate(system=f"{BASE}/CodeSystem/none", code="X")
    assert nothing["result"] is False and "No ConceptMap" in nothing["message"]

    reverse = await translate(url=url, system=ICD10, code="I20", reverse="true")
    assert [(parts(m)["equivalence"], parts(m)["concept"]["code"])
            for m in reverse["match"]] == [("wider", "CHD")]

    instance = await client.post(f"ConceptMap/{t.tag}-map/$translate", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "coding", "valueCoding": {"system": t.cs, "code": "DM"}}]})
    assert out(instance.json())["result"] is True
    scoped = await translate(system=t.cs, code="HTN", source=t.vs("htn"))
    assert scoped["result"] is False  # the map's source value set is another one

    no_code = await client.get("ConceptMap/$translate", params={"url": url})
    assert no_code.status_code == 400
    assert expressions(no_code) == ["code"]
    no_system = await client.get("ConceptMap/$translate", params={"code": "HTN"})
    assert no_system.status_code == 400
    assert expressions(no_system) == ["system"]
    unknown = await client.get("ConceptMap/$translate", params={
        "url": f"{BASE}/ConceptMap/none", "system": t.cs, "code": "HTN"})
    assert unknown.status_code == 404
    assert expressions(unknown) == ["url"]


async def test_search_modifiers_share_the_expansion(client: httpx.AsyncClient) -> None:
    """`:in` uses the same expansion as $expand: imports, excludes and ANDed filters."""
    t = await load(client)
    for code in ("HTN1", "HTN2", "HTN3", "CHD"):
        response = await client.put(f"Condition/{t.tag}-{code}", json={
            "resourceType": "Condition", "id": f"{t.tag}-{code}",
            "subject": {"reference": "Patient/x"},
            "code": {"coding": [{"system": t.cs, "code": code}]}})
        assert response.status_code == 201

    async def found(params: dict[str, str]) -> set[str]:
        response = await client.get("Condition", params={**params, "_count": "100"})
        assert response.status_code == 200, response.text
        return {e["resource"]["id"].removeprefix(f"{t.tag}-")
                for e in response.json().get("entry", [])
                if e["resource"]["id"].startswith(t.tag)}

    assert await found({"code:in": t.vs("chronic")}) == {"HTN1", "HTN3", "CHD"}
    assert await found({"code:in": t.vs("below")}) == {"HTN1", "HTN3"}
    assert await found({"code:below": f"{t.cs}|HTN"}) == {"HTN1", "HTN2", "HTN3"}
    assert await found({"code:above": f"{t.cs}|HTN3"}) == {"HTN3"}
