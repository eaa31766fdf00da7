"""Transaction Bundles (http://hl7.org/fhir/R4/http.html#transaction, rules #trules)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.helpers import create, patient, unique

from santong.api.app import create_app
from santong.settings import Settings

SYSTEM = "urn:oid:2.16.156.10011.1.3"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"],
                                         **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str, full_url: str | None = None,
        **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "PUT", "url": url, **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def call(method: str, url: str, **request: str) -> dict[str, Any]:
    return {"request": {"method": method, "url": url, **request}}


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "体温"},
        "subject": {"reference": subject},
    }
    resource.update(extra)
    return resource


def with_identifier(value: str, **extra: Any) -> dict[str, Any]:
    return patient(identifier=[{"system": SYSTEM, "value": value}], **extra)


def location_id(entry: dict[str, Any]) -> str:
    # [base]/[type]/[id]/_history/[vid]
    return entry["response"]["location"].split("/")[-3]


async def by_identifier(client: httpx.AsyncClient, value: str) -> list[dict[str, Any]]:
    found = (await client.get("Patient", params={"identifier": f"{SYSTEM}|{value}"})).json()
    return [e["resource"] for e in found.get("entry", []) if e["search"]["mode"] == "match"]


async def test_transaction_creates_and_rewrites_references_everywhere(
    client: httpx.AsyncClient,
) -> None:
    patient_url, oid_url = urn(), f"urn:oid:1.2.156.{uuid.uuid4().int % 10**9}"
    practitioner_id = unique("pr")
    absolute = f"http://other.example/fhir/Practitioner/{practitioner_id}"
    obs = observation(
        patient_url,
        # A reference inside an extension, one inside a contained resource, and a local one.
        extension=[{"url": "http://example.org/ext/seen-by",
                    "valueReference": {"reference": oid_url}}],
        contained=[{"resourceType": "RelatedPerson", "id": "rp1",
                    "patient": {"reference": patient_url}}],
        performer=[{"reference": "#rp1"}, {"reference": absolute},
                   {"reference": f"Practitioner/{practitioner_id}"}],
    )
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                           "code": "AMB"},
                 "subject": {"reference": patient_url},
                 # Relative to the absolute fullUrl of its own entry: other.example/fhir.
                 "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}]}
    request = bundle(
        "transaction",
        post(obs, urn()),
        post(patient(), patient_url),
        post({"resourceType": "Practitioner", "name": [{"family": "李"}]}, oid_url),
        put({"resourceType": "Practitioner", "id": practitioner_id},
            f"Practitioner/{practitioner_id}", absolute),
        post(encounter, "http://other.example/fhir/Encounter/e1"),
    )
    response = await client.post("", json=request)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created"] * 5
    for entry in result["entry"]:
        assert entry["response"]["etag"] == 'W/"1"'
        # The version's lastUpdated, to the millisecond (Last-Modified has whole seconds).
        assert entry["response"]["lastModified"] == entry["resource"]["meta"]["lastUpdated"]
    obs_id, patient_id, oid_practitioner = (location_id(e) for e in result["entry"][:3])
    assert result["entry"][1]["resource"]["id"] == patient_id
    stored = (await client.get(f"Observation/{obs_id}")).json()
    assert stored["subject"] == {"reference": f"Patient/{patient_id}"}
    assert stored["extension"][0]["valueReference"] == {
        "reference": f"Practitioner/{oid_practitioner}"}
    assert stored["contained"][0]["patient"] == {"reference": f"Patient/{patient_id}"}
    assert stored["performer"] == [
        {"reference": "#rp1"},
        {"reference": f"Practitioner/{practitioner_id}"},
        # Relative to this server (the entry's fullUrl is a urn): left as it was.
        {"reference": f"Practitioner/{practitioner_id}"},
    ]
    encounter_id = location_id(result["entry"][4])
    stored_encounter = (await client.get(f"Encounter/{encounter_id}")).json()
    assert stored_encounter["subject"] == {"reference": f"Patient/{patient_id}"}
    assert stored_encounter["participant"][0]["individual"] == {
        "reference": f"Practitioner/{practitioner_id}"}
    assert (await client.get(f"Patient/{patient_id}")).status_code == 200


def _rollback_bundle(existing_id: str, marks: list[str], fresh_id: str,
                     broken: int) -> dict[str, Any]:
    patient_url = urn()
    entries = [
        post(with_identifier(marks[0]), patient_url),
        put(with_identifier(marks[1], id=fresh_id), f"Patient/{fresh_id}"),
        call("DELETE", f"Patient/{existing_id}"),
        post(observation(patient_url, identifier=[{"system": SYSTEM, "value": marks[2]}])),
        call("GET", f"Patient/{fresh_id}"),  # runs after the PUT that creates it
    ]
    if broken == 0:
        entries[0]["resource"]["birthDate"] = "not a date"
    elif broken == 1:
        entries[1]["request"]["ifMatch"] = 'W/"3"'  # it does not exist yet: 412
    elif broken == 2:
        entries[2]["request"]["ifMatch"] = 'W/"7"'  # stale version: 412
    elif broken == 3:
        del entries[3]["resource"]["status"]  # required: 422
    elif broken == 4:
        entries[4]["request"]["url"] = f"Patient/{unique('missing')}"  # 404
    return bundle("transaction", *entries)


@pytest.mark.parametrize(("broken", "status"), [(0, 400), (1, 412), (2, 412), (3, 422),
                                                (4, 404)])
async def test_any_failing_entry_rolls_back_every_entry(
    client: httpx.AsyncClient, broken: int, status: int
) -> None:
    existing = (await create(client, patient())).json()
    marks = [unique("rb") for _ in range(3)]
    fresh_id = unique("fresh")
    response = await client.post("", json=_rollback_bundle(existing["id"], marks, fresh_id,
                                                           broken))
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [f"Bundle.entry[{broken}]"]
    assert f"Bundle.entry[{broken}]" in outcome["issue"][0]["diagnostics"]
    # Nothing any entry did survived.
    assert await by_identifier(client, marks[0]) == []
    assert (await client.get(f"Patient/{fresh_id}")).status_code == 404
    still = await client.get(f"Patient/{existing['id']}")
    assert still.status_code == 200
    assert still.json()["meta"]["versionId"] == "1"
    found = (await client.get("Observation", params={"identifier": f"{SYSTEM}|{marks[2]}"}))
    assert "entry" not in found.json() or not [
        e for e in found.json()["entry"] if e["search"]["mode"] == "match"]
    # And the same Bundle without the fault goes through.
    if broken == 0:
        ok = await client.post("", json=_rollback_bundle(existing["id"], marks, fresh_id, -1))
        assert ok.status_code == 200, ok.text
        assert len(await by_identifier(client, marks[0])) == 1


async def test_invalid_resource_issue_points_into_the_bundle(client: httpx.AsyncClient) -> None:
    response = await client.post("", json=bundle(
        "transaction", post(patient()), post(patient(birthDate="1970-13-01"))))
    assert response.status_code == 400
    expressions = [e for i in response.json()["issue"] for e in i.get("expression", [])]
    assert expressions == ["Bundle.entry[1]", "Bundle.entry[1].resource.birthDate"]


async def test_processing_order_and_response_order(client: httpx.AsyncClient) -> None:
    kept = (await create(client, patient())).json()
    gone = (await create(client, patient())).json()
    before = (await client.get(f"Patient/{gone['id']}")).json()["meta"]["lastUpdated"]
    request = bundle(
        "transaction",
        call("GET", f"Patient/{kept['id']}"),  # runs last: sees the PUT below
        put({**kept, "gender": "female"}, f"Patient/{kept['id']}"),
        post(patient(), urn()),
        call("DELETE", f"Patient/{gone['id']}"),
    )
    response = await client.post("", json=request)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == [
        "200 OK", "200 OK", "201 Created", "204 No Content"]
    assert entries[0]["resource"]["gender"] == "female"
    assert entries[0]["resource"]["meta"]["versionId"] == "2"
    created = location_id(entries[2])
    history = (await client.get("_history", params={"_since": before, "_count": 100})).json()
    mine = [(e["request"]["method"], e["fullUrl"].split("/")[-1]) for e in history["entry"]
            if e["fullUrl"].split("/")[-1] in (kept["id"], gone["id"], created)]
    # Newest first: the update after the create after the delete; then the creation of
    # `gone` before the Bundle.
    assert mine[:4] == [("PUT", kept["id"]), ("POST", created), ("DELETE", gone["id"]),
                        ("POST", gone["id"])]


async def test_conditional_references(client: httpx.AsyncClient) -> None:
    one, two, none = unique("one"), unique("two"), unique("none")
    target = (await create(client, with_identifier(one))).json()
    await create(client, with_identifier(two))
    await create(client, with_identifier(two))

    ok = await client.post("", json=bundle("transaction", post(observation(
        f"Patient?identifier={SYSTEM}|{one}"))))
    assert ok.status_code == 200, ok.text
    stored = (await client.get(f"Observation/{location_id(ok.json()['entry'][0])}")).json()
    assert stored["subject"] == {"reference": f"Patient/{target['id']}"}

    for value, words in ((none, "no resource matches"), (two, "several resources match")):
        failed = await client.post("", json=bundle(
            "transaction", post(patient()), post(observation(
                f"Patient?identifier={SYSTEM}|{value}"))))
        assert failed.status_code == 412, failed.text
        issue = failed.json()["issue"][0]
        assert issue["expression"] == ["Bundle.entry[1]"]
        assert words in issue["diagnostics"]


async def test_conditional_reference_to_a_conditional_create_in_the_bundle(
    client: httpx.AsyncClient,
) -> None:
    value = unique("cc")
    criteria = f"identifier={SYSTEM}|{value}"
    request = bundle("transaction",
                     post(observation(f"Patient?{criteria}")),
                     post(with_identifier(value), urn(), ifNoneExist=criteria))
    response = await client.post("", json=request)
    assert response.status_code == 200, response.text
    patient_id = location_id(response.json()["entry"][1])
    stored = (await client.get(f"Observation/{location_id(response.json()['entry'][0])}"))
    assert stored.json()["subject"]["reference"] == f"Patient/{patient_id}"


async def test_if_none_exist_finds_the_existing_resource(client: httpx.AsyncClient) -> None:
    value = unique("ine")
    existing = (await create(client, with_identifier(value))).json()
    patient_url = urn()
    response = await client.post("", json=bundle(
        "transaction",
        post(with_identifier(value), patient_url, ifNoneExist=f"identifier={SYSTEM}|{value}"),
        post(observation(patient_url))))
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert location_id(first) == existing["id"]
    stored = (await client.get(f"Observation/{location_id(second)}")).json()
    assert stored["subject"]["reference"] == f"Patient/{existing['id']}"
    assert len(await by_identifier(client, value)) == 1


async def test_a_bundles_conditional_creates_are_matched_together(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ifNoneExist criteria of a Bundle's entries are searched by one statement; one that
    matched nothing is confirmed under its lock (searched again), as a lone one is. Criteria
    of one shape (`identifier=system|value`) are one LATERAL over arrays of their values, so
    the statement is the same for any values and prepared once (not planned each time)."""
    import asyncpg

    existing_value, new_value = unique("pre-old"), unique("pre-new")
    existing = (await create(client, with_identifier(existing_value))).json()
    searches: list[tuple[str, str]] = []
    fetch, prepare = asyncpg.Connection.fetch, asyncpg.Connection.prepare

    async def fetching(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        if "FROM resource r WHERE" in query:  # prepared statements (cached)
            searches.append(("fetch", query))
        return await fetch(self, query, *args, **kw)

    async def preparing(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        if "FROM resource r WHERE" in query:  # statements planned once (not cached)
            searches.append(("prepare", query))
        return await prepare(self, query, *args, **kw)

    monkeypatch.setattr(asyncpg.Connection, "fetch", fetching)
    monkeypatch.setattr(asyncpg.Connection, "prepare", preparing)
    old_url, new_url, again_url = urn(), urn(), urn()
    response = await client.post("", json=bundle(
        "transaction",
        post(with_identifier(existing_value), old_url,
             ifNoneExist=f"identifier={SYSTEM}|{existing_value}"),
        post(with_identifier(new_value), new_url,
             ifNoneExist=f"identifier={SYSTEM}|{new_value}"),
        post(with_identifier(existing_value), again_url,
             ifNoneExist=f"identifier={SYSTEM}|{existing_value}"),
        post(observation(old_url, focus=[{"reference": new_url}, {"reference": again_url}]))))
    monkeypatch.undo()
    assert response.status_code == 200, response.text
    old, new, again, obs = response.json()["entry"]
    assert [e["response"]["status"] for e in (old, new, again)] == [
        "200 OK", "201 Created", "200 OK"]
    assert location_id(old) == location_id(again) == existing["id"]
    stored = (await client.get(f"Observation/{location_id(obs)}")).json()
    assert stored["subject"]["reference"] == f"Patient/{existing['id']}"
    assert [f["reference"] for f in stored["focus"]] == [
        f"Patient/{location_id(new)}", f"Patient/{existing['id']}"]
    # Both criteria in one statement, then the unmatched one again under its lock: the same
    # statement, one LATERAL over the criteria's values.
    assert [how for how, _ in searches] == ["fetch", "fetch"], searches
    assert searches[0][1] == searches[1][1] and "CROSS JOIN LATERAL" in searches[0][1]
    assert len(await by_identifier(client, new_value)) == 1


async def test_an_entry_nested_deeper_than_python_recurses_is_a_400(
        client: httpx.AsyncClient) -> None:
    """References are found recursively, falling back to a stack for depths beyond Python's
    recursion limit: the deepest one is still found (here it names no entry: a 400), and
    nothing fails with a 500."""
    import sys

    levels = sys.getrecursionlimit() // 2 + 5  # a dict and a list each: past the limit
    missing = urn()
    deep = '{"reference": "' + missing + '"}'
    for _ in range(levels):
        deep = '{"url": "http://example.org/x", "extension": [' + deep + "]}"
    body = ('{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": '
            '{"resourceType": "Basic", "code": {"text": "deep"}, "extension": [' + deep
            + ']}, "request": {"method": "POST", "url": "Basic"}}]}')
    response = await client.post("", content=body,
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert missing in issue["diagnostics"] and "matches the fullUrl of no entry" in issue[
        "diagnostics"]


async def test_conditional_creates_of_several_shapes_each_find_their_own_match(
        client: httpx.AsyncClient) -> None:
    """One Bundle's criteria of different shapes, searched together: those of one shape as
    one LATERAL over their values (identifier alone; identifier with gender), the others
    (a name, a date: their plans depend on the value) each on their own, their binds apart.
    Each entry gets its own match, or a new resource."""
    family, other_family = unique("形状"), unique("形状")
    known, fresh, paired = unique("shape-known"), unique("shape-fresh"), unique("shape-pair")
    named = (await create(client, patient(name=[{"family": family}]))).json()
    born = (await create(client, patient(name=[{"family": other_family}],
                                         birthDate="1931-07-02"))).json()
    identified = (await create(client, with_identifier(known))).json()
    pair = (await create(client, with_identifier(paired, gender="female"))).json()
    entries = [
        post(with_identifier(fresh), urn(), ifNoneExist=f"identifier={SYSTEM}|{fresh}"),
        post(patient(), urn(), ifNoneExist=f"family={family}"),
        post(with_identifier(known), urn(), ifNoneExist=f"identifier={SYSTEM}|{known}"),
        post(patient(), urn(), ifNoneExist=f"family={other_family}&birthdate=1931-07-02"),
        post(with_identifier(paired), urn(),
             ifNoneExist=f"identifier={SYSTEM}|{paired}&gender=female"),
        post(with_identifier(paired), urn(),
             ifNoneExist=f"identifier={SYSTEM}|{paired}&gender=male"),
    ]
    response = await client.post("", json=bundle("transaction", *entries))
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    assert [e["response"]["status"] for e in answers] == [
        "201 Created", "200 OK", "200 OK", "200 OK", "200 OK", "201 Created"]
    assert [location_id(answers[i]) for i in (1, 2, 3, 4)] == [
        named["id"], identified["id"], born["id"], pair["id"]]
    assert len({location_id(answers[0]), location_id(answers[5]), *(
        location_id(answers[i]) for i in (1, 2, 3, 4))}) == 6


async def test_conditional_creates_past_one_statements_worth_each_find_their_own_match(
        client: httpx.AsyncClient) -> None:
    """205 criteria of one shape are searched 100 at a time (three LATERAL statements); every
    third matches a Patient created before, the others create one each: each entry answers
    for its own criteria, none for a neighbour's."""
    values = [unique("m") for _ in range(205)]

    def minimal(value: str) -> dict[str, Any]:  # the Bundle stays under the body limit
        return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}]}

    existing = {i: (await create(client, minimal(values[i]))).json()["id"]
                for i in range(0, 205, 3)}
    response = await client.post("", json=bundle("transaction", *(
        post(minimal(value), ifNoneExist=f"identifier={SYSTEM}|{value}") for value in values)))
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    for i, answer in enumerate(answers):
        if i in existing:
            assert answer["response"]["status"] == "200 OK", i
            assert location_id(answer) == existing[i], i
        else:
            assert answer["response"]["status"] == "201 Created", i
            assert answer["resource"]["identifier"][0]["value"] == values[i], i
    assert len({location_id(a) for a in answers}) == 205


async def test_a_prefetched_criteria_with_two_matches_fails_the_transaction(
        client: httpx.AsyncClient) -> None:
    twice, other = unique("pre-twice"), unique("pre-other")
    for _ in range(2):
        await create(client, with_identifier(twice))
    response = await client.post("", json=bundle(
        "transaction",
        post(with_identifier(other), urn(), ifNoneExist=f"identifier={SYSTEM}|{other}"),
        post(with_identifier(twice), urn(), ifNoneExist=f"identifier={SYSTEM}|{twice}")))
    assert response.status_code == 412, response.text
    issues = response.json()["issue"]
    assert issues[0]["expression"] == ["Bundle.entry[1]"], issues
    assert "match 2 resources" in issues[0]["diagnostics"]
    assert await by_identifier(client, other) == []  # nothing written


async def test_concurrent_conditional_creates_in_transactions_make_one_resource(
    client: httpx.AsyncClient,
) -> None:
    value, second = unique("race"), unique("race-2")

    def request() -> dict[str, Any]:
        patient_url = urn()
        # Two criteria: matched together first (none matches), then each under its lock.
        return bundle("transaction",
                      post(with_identifier(value), patient_url,
                           ifNoneExist=f"identifier={SYSTEM}|{value}"),
                      post(observation(patient_url)),
                      post(with_identifier(second), urn(),
                           ifNoneExist=f"identifier={SYSTEM}|{second}"))

    responses = await asyncio.gather(*(client.post("", json=request()) for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    for index in (0, 2):
        statuses = sorted(r.json()["entry"][index]["response"]["status"] for r in responses)
        assert statuses == ["200 OK"] * 3 + ["201 Created"]
    assert len(await by_identifier(client, second)) == 1
    found = await by_identifier(client, value)
    assert len(found) == 1
    for r in responses:
        obs = (await client.get(f"Observation/{location_id(r.json()['entry'][1])}")).json()
        assert obs["subject"]["reference"] == f"Patient/{found[0]['id']}"


async def test_entry_preconditions(client: httpx.AsyncClient) -> None:
    current = (await create(client, patient())).json()
    url = f"Patient/{current['id']}"
    ok = await client.post("", json=bundle("transaction", put(
        {**current, "gender": "female"}, url, ifMatch='W/"1"')))
    assert ok.status_code == 200, ok.text
    assert ok.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    stale = await client.post("", json=bundle("transaction", put(current, url, ifMatch='W/"1"')))
    assert stale.status_code == 412
    exists = await client.post("", json=bundle("transaction", put(current, url,
                                                                   ifNoneMatch="*")))
    assert exists.status_code == 412
    # Reads in a transaction honour ifNoneMatch / ifModifiedSince.
    cached = await client.post("", json=bundle(
        "transaction", call("GET", url, ifNoneMatch='W/"2"'),
        call("GET", url, ifModifiedSince="Fri, 01 Jan 2100 00:00:00 GMT"),
        call("GET", url, ifNoneMatch='W/"1"'), call("HEAD", url)))
    entries = cached.json()["entry"]
    assert [e["response"]["status"] for e in entries] == [
        "304 Not Modified", "304 Not Modified", "200 OK", "200 OK"]
    assert entries[2]["resource"]["meta"]["versionId"] == "2"
    assert "resource" not in entries[3] and entries[3]["response"]["etag"] == 'W/"2"'


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    request = bundle("transaction", post(patient()))
    minimal = await client.post("", json=request, headers={"Prefer": "return=minimal"})
    entry = minimal.json()["entry"][0]
    assert "resource" not in entry and entry["response"]["location"]
    outcome = await client.post("", json=request,
                                headers={"Prefer": "return=OperationOutcome"})
    entry = outcome.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"
    full = await client.post("", json=request)
    assert full.json()["entry"][0]["resource"]["resourceType"] == "Patient"


async def test_malformed_bundles(client: httpx.AsyncClient) -> None:
    collection = await client.post("", json=bundle("collection", post(patient())))
    assert collection.status_code == 400
    assert "batch" in collection.json()["issue"][0]["diagnostics"]
    not_bundle = await client.post("", json=patient())
    assert not_bundle.status_code == 400
    dangling = await client.post("", json=bundle("transaction", post(observation(urn()))))
    assert dangling.status_code == 400
    assert "fullUrl of no entry" in dangling.json()["issue"][0]["diagnostics"]
    twice = (await create(client, patient())).json()
    overlap = await client.post("", json=bundle(
        "transaction", put(twice, f"Patient/{twice['id']}"),
        call("DELETE", f"Patient/{twice['id']}")))
    assert overlap.status_code == 400
    assert "also changed by Bundle.entry[0]" in overlap.json()["issue"][0]["diagnostics"]
    no_method = await client.post("", json=bundle("transaction", {"request": {"url": "x"}}))
    assert no_method.status_code == 400
    assert no_method.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    foreign = await client.post("", json=bundle(
        "transaction", call("GET", "http://elsewhere.example/fhir/Patient/1")))
    assert foreign.status_code == 400


async def test_body_limit(client: httpx.AsyncClient, settings: Settings) -> None:
    big = bundle("transaction", *(post(patient(text={
        "status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">{'x' * 900}"
                                      "</div>"})) for _ in range(80)))
    response = await client.post("", json=big)
    assert response.status_code == 413
    assert str(settings.max_body_bytes) in response.json()["issue"][0]["diagnostics"]


@pytest.fixture
async def small_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(max_bundle_entries=3), database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/fhir/") as c:
            yield c


async def test_entry_limit(small_client: httpx.AsyncClient) -> None:
    too_many = await small_client.post("", json=bundle("batch", *(post(patient())
                                                                  for _ in range(4))))
    assert too_many.status_code == 413
    assert "limit is 3" in too_many.json()["issue"][0]["diagnostics"]
    assert (await small_client.post("", json=bundle("batch", post(patient())))).status_code == 200


# --- write-behind: creates and index rows queued, flushed before reads and at commit ----------


async def test_searches_in_a_transaction_see_its_queued_creates(
        client: httpx.AsyncClient) -> None:
    """GET entries run after the writes in the same database transaction: a search must see
    resources and index rows that are still queued."""
    value = unique("wb")
    many = [post(observation(f"urn:uuid:{i}", code={"text": value}), urn()) for i in range(3)]
    request = bundle(
        "transaction",
        post(with_identifier(value), urn()),
        *many,
        call("GET", f"Patient?identifier={SYSTEM}|{value}"),
        call("GET", f"Observation?code:text={value}&_summary=count"),
    )
    # The Observations refer to one of the others' fullUrls: rewrite them to the Patient.
    patient_url = request["entry"][0]["fullUrl"]
    for entry in many:
        entry["resource"]["subject"]["reference"] = patient_url
    response = await client.post("", json=request)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    found = entries[4]["resource"]
    assert found["total"] == 1 and found["entry"][0]["resource"]["identifier"][0]["value"] == value
    assert entries[5]["resource"]["total"] == 3


async def test_a_large_transaction_is_indexed_and_in_history(client: httpx.AsyncClient) -> None:
    value = unique("big")
    patient_url = urn()
    entries = [post(with_identifier(value), patient_url)] + [
        post(observation(patient_url, code={"text": value}, valueQuantity={
            "value": i, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}),
            urn()) for i in range(150)]
    response = await client.post("", json=bundle("transaction", *entries))
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    assert {a["response"]["status"] for a in answers} == {"201 Created"}
    ids = {location_id(a) for a in answers[1:]}
    assert len(ids) == 150
    searched = (await client.get("Observation", params={
        "code:text": value, "value-quantity": "ge100|http://unitsofmeasure.org|mm[Hg]",
        "_count": 100})).json()
    assert searched["total"] == 50
    subject = location_id(answers[0])
    counted = (await client.get("Observation", params={
        "subject": f"Patient/{subject}", "_summary": "count"})).json()
    assert counted["total"] == 150
    some = sorted(ids)[:5]
    for id in some:
        history = (await client.get(f"Observation/{id}/_history")).json()
        assert [e["request"]["method"] for e in history["entry"]] == ["POST"]


async def test_transactions_that_deadlock_are_run_again(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Bundles whose conditional updates lock the same two criteria in opposite orders
    deadlock; PostgreSQL rolls one back, and the server runs it again once the other is done
    (Router._bundle), instead of answering 409. Held here at the worst moment: each has its
    first criteria locked before either asks for its second."""
    from santong.fhir.interactions import transaction as transaction_module

    first, second = unique("deadlock-a"), unique("deadlock-b")
    settle = transaction_module._settle_conditional_put
    holding: list[int] = []
    both_hold = asyncio.Event()

    async def settling(call: Any, entry: Any, plan: Any) -> str | None:
        target = await settle(call, entry, plan)
        if entry.index == 0 and not both_hold.is_set():  # first attempts only
            holding.append(entry.index)
            if len(holding) == 2:
                both_hold.set()
            await asyncio.wait_for(both_hold.wait(), 30)
        return target

    def update(value: str, gender: str) -> dict[str, Any]:
        return put(with_identifier(value, gender=gender), f"Patient?identifier={SYSTEM}|{value}")

    monkeypatch.setattr(transaction_module, "_settle_conditional_put", settling)
    responses = await asyncio.gather(
        client.post("", json=bundle("transaction", update(first, "male"),
                                    update(second, "male"))),
        client.post("", json=bundle("transaction", update(second, "female"),
                                    update(first, "female"))))
    monkeypatch.undo()
    assert len(holding) == 2  # the deadlock was set up
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    statuses = sorted(e["response"]["status"] for r in responses for e in r.json()["entry"])
    assert statuses == ["200 OK", "200 OK", "201 Created", "201 Created"]
    for value in (first, second):
        found = await by_identifier(client, value)
        assert len(found) == 1 and found[0]["meta"]["versionId"] == "2"


async def test_a_transaction_that_keeps_losing_races_is_a_409(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs are bounded: a transaction that deadlocks every time gets the 409 after the last
    attempt, and none of its attempts left anything behind."""
    import asyncpg

    from santong.fhir import router as router_module
    from santong.fhir.interactions import transaction as transaction_module

    value = unique("always-deadlocked")
    settle = transaction_module._settle_identities
    attempts: list[int] = []

    async def deadlocking(*args: Any, **kwargs: Any) -> Any:
        await settle(*args, **kwargs)  # its criteria locked, as in a real deadlock
        attempts.append(1)
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(transaction_module, "_settle_identities", deadlocking)
    response = await client.post("", json=bundle(
        "transaction", post(with_identifier(value), urn(),
                            ifNoneExist=f"identifier={SYSTEM}|{value}")))
    monkeypatch.undo()
    assert response.status_code == 409, response.text
    assert len(attempts) == router_module._TRANSACTION_ATTEMPTS
    assert await by_identifier(client, value) == []


async def test_a_queued_create_whose_id_is_taken_fails_the_whole_transaction(
        database_url: str) -> None:
    """A server-drawn uuid that someone holds after all (it cannot happen in practice) is a
    409 conflict at the flush, and nothing of the transaction is kept."""
    from santong.fhir.storing import create_version_1
    from santong.fhir.versioning import now
    from santong.search.index import IndexRows
    from santong.storage.database import create_engine
    from santong.storage.repository import DuplicateId, Repository

    engine = create_engine(database_url)
    taken, other = unique("taken"), unique("other")
    try:
        repository = Repository(engine)
        async with repository.transaction() as tx:
            assert await create_version_1(tx, patient(), taken, "PUT") is not None
        with pytest.raises(DuplicateId):
            async with repository.transaction() as tx:
                await create_version_1(tx, patient(), other, "POST", fresh=True)
                tx.queue_first_version("Patient", taken, now(), "{}", "POST", IndexRows())
        async with repository.reading() as tx:
            assert await tx.read_current("Patient", other) is None
            kept = await tx.read_current("Patient", taken)
            assert kept is not None and kept.content != "{}"
    finally:
        await engine.dispose()


async def test_history_keeps_the_order_of_writes_within_a_millisecond(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions of one millisecond are ordered by their history rows: a queued create must
    not be numbered after a write made later in the same transaction."""
    from santong.fhir import storing
    from santong.fhir.storing import create_version_1, write_next
    from santong.fhir.versioning import now
    from santong.storage.database import create_engine
    from santong.storage.repository import HistoryQuery, Repository

    moment = now()
    monkeypatch.setattr(storing, "now", lambda: moment)  # every write in the same millisecond
    engine = create_engine(database_url)
    try:
        repository = Repository(engine)
        existing = unique("hist")
        async with repository.transaction() as tx:
            assert await create_version_1(tx, patient(), existing, "PUT") is not None
        async with repository.transaction() as tx:
            created = await create_version_1(tx, patient(), unique("new"), "POST", fresh=True)
            current = await tx.read_current("Patient", existing, for_update=True)
            assert created is not None and current is not None
            await write_next(tx, current, {**patient(), "id": existing}, "PUT")
        async with repository.reading() as tx:
            newest = await tx.history(HistoryQuery(limit=2))
        assert [(v.id, v.method) for v in newest] == [(existing, "PUT"), (created.id, "POST")]
    finally:
        await engine.dispose()


async def test_lazy_transactions_send_one_statement_for_a_create_and_clean_up_after_failures(
        database_url: str) -> None:
    """A plain create is one statement in autocommit (no BEGIN/COMMIT); a transaction that
    began and failed is rolled back, so the pooled connection's next lone statement commits."""
    import asyncpg

    from santong.fhir.storing import create_version_1
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    engine = create_engine(database_url, pool_size=1)  # every transaction gets the same one
    other = create_engine(database_url, pool_size=1)
    sent: list[str] = []
    original = asyncpg.Connection.execute  # the repository sends BEGIN/COMMIT/ROLLBACK so

    async def execute(self: asyncpg.Connection, statement: str, *args: Any, **kw: Any) -> Any:
        sent.append(statement)
        return await original(self, statement, *args, **kw)

    try:
        repository = Repository(engine)
        async with repository.reading() as tx:  # SQLAlchemy's first-connect queries: not ours
            await tx.read_current("Patient", "none")
        asyncpg.Connection.execute = execute  # type: ignore[method-assign]
        try:
            async with repository.transaction() as tx:
                await create_version_1(tx, patient(), unique("lone"), "POST", fresh=True)
            assert sent == []  # neither BEGIN nor COMMIT
            existing = unique("locked")
            async with repository.transaction() as tx:
                assert await create_version_1(tx, patient(), existing, "PUT") is not None
            assert sent == ["BEGIN", "COMMIT"]  # an immediate write, then the index flush
            with pytest.raises(RuntimeError):
                async with repository.transaction() as tx:
                    await tx.read_current("Patient", existing, for_update=True)
                    raise RuntimeError("the interaction failed")
            assert sent[-1] == "ROLLBACK"
        finally:
            asyncpg.Connection.execute = original  # type: ignore[method-assign]
        after = unique("after")
        async with repository.transaction() as tx:
            await create_version_1(tx, patient(), after, "POST", fresh=True)
        async with Repository(other).reading() as tx:  # committed: another connection sees it
            assert await tx.read_current("Patient", after) is not None
    finally:
        await engine.dispose()
        await other.dispose()


async def test_conditional_references_see_what_the_bundle_creates(
    client: httpx.AsyncClient,
) -> None:
    """A conditional reference to a resource the same transaction creates (without
    ifNoneExist) finds it, whichever entry comes first; one that still matches nothing fails."""
    value, other, put_id = unique("same"), unique("later"), unique("obs")
    criteria = f"Patient?identifier={SYSTEM}|{value}"
    response = await client.post("", json=bundle(
        "transaction",
        post(observation(criteria)),  # before the Patient it points at
        post(with_identifier(value)),
        put(observation(criteria, id=put_id), f"Observation/{put_id}"),
    ))
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    patient_id = location_id(entries[1])
    for entry in (entries[0], entries[2]):
        stored = (await client.get(f"Observation/{location_id(entry)}")).json()
        assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 3

    # Created by a conditional PUT in the Bundle, referenced by a PATCH.
    target = (await create(client, patient())).json()
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "link"},
        {"name": "value", "part": [
            {"name": "other", "valueReference": {"reference": f"Patient?identifier={SYSTEM}|"
                                                              f"{other}"}},
            {"name": "type", "valueCode": "seealso"}]}]}]}
    response = await client.post("", json=bundle(
        "transaction",
        {"resource": patch, "request": {"method": "PATCH", "url": f"Patient/{target['id']}"}},
        put(with_identifier(other), f"Patient?identifier={SYSTEM}|{other}"),
    ))
    assert response.status_code == 200, response.text
    created = location_id(response.json()["entry"][1])
    linked = (await client.get(f"Patient/{target['id']}")).json()
    assert linked["link"][0]["other"] == {"reference": f"Patient/{created}"}

    # Nothing in the database or the Bundle matches: the entry fails, nothing is written.
    missing = unique("missing")
    failed = await client.post("", json=bundle(
        "transaction",
        post(observation(f"Patient?identifier={SYSTEM}|{missing}")),
        post(with_identifier(unique("bystander"))),
    ))
    assert failed.status_code == 412, failed.text
    assert failed.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert "no resource matches" in failed.json()["issue"][0]["diagnostics"]
    # Two created in the Bundle: several matches.
    twice = unique("twice")
    failed = await client.post("", json=bundle(
        "transaction",
        post(observation(f"Patient?identifier={SYSTEM}|{twice}")),
        post(with_identifier(twice)), post(with_identifier(twice)),
    ))
    assert failed.status_code == 412, failed.text
    assert "several resources match" in failed.json()["issue"][0]["diagnostics"]
    assert (await by_identifier(client, twice)) == []


async def test_a_long_transaction_lets_the_process_serve_others(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dispatching queued creates awaits nothing that suspends, so a long Bundle would hold
    its process's event loop to the end (2.8 s for 10,000 entries): every 100 entries it
    yields, and a concurrent task (another request, the supervisor's ping) runs meanwhile."""
    from santong.fhir import router as router_module

    runs = 0

    async def other_work() -> None:
        nonlocal runs
        while True:
            runs += 1
            await asyncio.sleep(0)

    seen: list[int] = []
    dispatch = router_module.Router.dispatch

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(runs)
        return await dispatch(self, *args, **kwargs)

    monkeypatch.setattr(router_module.Router, "dispatch", counting)
    entries = [post({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}})
               for _ in range(250)]
    other = asyncio.create_task(other_work())
    try:
        response = await client.post("", json=bundle("transaction", *entries))
    finally:
        other.cancel()
    assert response.status_code == 200, response.text
    during = seen[-250:]  # the entries' dispatches (the Bundle's own came first)
    # The other task ran between the entries at least twice (after the 100th and 200th).
    assert sum(1 for a, b in itertools.pairwise(during) if b > a) >= 2, during
