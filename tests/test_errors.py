"""Every client error is a clear OperationOutcome with the right status, and changes nothing."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.helpers import admin, create, expressions, outcome_issues, patient, unique

from santong.api.app import create_app
from santong.fhir.versioning import instant, now
from santong.settings import Settings


async def versions_since(client: httpx.AsyncClient, since: str) -> int:
    bundle = (await client.get("_history", params={"_since": since})).json()
    return len(bundle.get("entry", []))


@pytest.mark.parametrize(
    ("body", "status", "code", "expression"),
    [
        (b"{not json", 400, "structure", None),
        (b"", 400, "required", None),
        (b"[1, 2]", 400, "structure", None),
        (b'{"resourceType": "Observation", "status": "final"}', 400, "invalid", "resourceType"),
        (b'{"name": []}', 400, "invalid", "resourceType"),
        (b'{"resourceType": "Patient", "foo": 1}', 400, None, "Patient.foo"),
        (b'{"resourceType": "Patient", "active": "yes"}', 400, None, "Patient.active"),
        (b'{"resourceType": "Patient", "birthDate": "1970-13-01"}', 400, None,
         "Patient.birthDate"),
        (b'{"resourceType": "Patient", "name": {"family": "x"}}', 400, None, "Patient.name"),
        (b'{"resourceType": "Patient", "name": [{"given": "x"}]}', 400, None,
         "Patient.name[0].given"),
        (b'{"resourceType": "Patient", "gender": ""}', 400, None, "Patient.gender"),
        (b'{"resourceType": "Patient", "gender": "banana"}', 400, "code-invalid",
         "Patient.gender"),
        (b'{"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]}', 400, "value", None),
        # A valid FHIR decimal that PostgreSQL's numeric (the search index) cannot hold: was
        # a 500 when the index rows were written.
        (b'{"resourceType": "Patient", "extension": [{"url": "http://example.org/x",'
         b' "valueDecimal": -1e-200000}]}', 400, "value", "Patient.extension[0].valueDecimal"),
        # Past a double's range (orjson cannot read it): was "not valid JSON".
        (b'{"resourceType": "Patient", "extension": [{"url": "http://example.org/x",'
         b' "valueDecimal": 1e2000}]}', 400, "value", "Patient.extension[0].valueDecimal"),
        # A lone surrogate is malformed JSON, also in a body the json module reads.
        (b'{"resourceType": "Patient", "extension": [{"url": "http://example.org/x",'
         b' "valueDecimal": 1e400}], "name": [{"family": "\\ud800"}]}', 400, "structure",
         None),
    ],
)
async def test_invalid_create(
    client: httpx.AsyncClient, body: bytes, status: int, code: str | None,
    expression: str | None,
) -> None:
    before = instant(now())
    response = await client.post("Patient", content=body,
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == status, response.text
    issues = outcome_issues(response)
    if code is not None:
        assert issues[0]["code"] == code
    if expression is not None:
        assert expression in expressions(response)
    assert "Traceback" not in response.text
    assert await versions_since(client, before) == 0


async def test_decimal_beyond_a_double_is_named(client: httpx.AsyncClient) -> None:
    """1e400 is well-formed JSON (it was refused as "not valid JSON"): a 400 naming the
    element and quoting the number as written, since a double cannot hold it."""
    body = (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"},'
            b' "valueQuantity": {"value": -1E+400, "unit": "mg"}}')
    response = await client.post("Observation", content=body,
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400, response.text
    [issue] = outcome_issues(response)
    assert (issue["code"], issue["expression"]) == ("value", ["Observation.valueQuantity.value"])
    assert "'-1E+400'" in issue["diagnostics"] and "JSON" not in issue["diagnostics"]
    response = await client.post("Patient", content=b'{"resourceType": "Patient",'
                                 b' "multipleBirthInteger": 1e400}',
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400, response.text
    [issue] = outcome_issues(response)
    assert issue["expression"] == ["Patient.multipleBirthInteger"]
    assert "'1e400'" in issue["diagnostics"]


async def test_missing_required_element_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("Observation", json={"resourceType": "Observation",
                                                      "code": {"text": "x"}})
    assert response.status_code == 422
    assert outcome_issues(response)[0]["code"] == "required"
    assert "Observation.status" in expressions(response)


async def test_required_binding_on_every_write(client: httpx.AsyncClient) -> None:
    """A code outside its required value set is refused by create, update and in a
    transaction, naming the allowed codes; nothing is written."""
    value_set = {"resourceType": "ValueSet", "url": f"http://example.org/{unique('vs')}",
                 "status": "nonsense"}
    response = await client.post("ValueSet", json=value_set)
    assert response.status_code == 400, response.text
    [issue] = outcome_issues(response)
    assert (issue["code"], issue["expression"]) == ("code-invalid", ["ValueSet.status"])
    assert "active, draft, retired, unknown" in issue["diagnostics"]
    created = await create(client, {**value_set, "status": "draft"})
    stored = created.json()
    response = await client.put(f"ValueSet/{stored['id']}", json={**stored, "status": "final"})
    assert response.status_code == 400, response.text
    assert expressions(response) == ["ValueSet.status"]
    first = patient()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": first, "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient(gender="banana"), "request": {"method": "POST", "url": "Patient"}}]}
    response = await client.post("", json=bundle)
    assert response.status_code == 400, response.text
    assert outcome_issues(response)[0]["code"] == "code-invalid"
    found = await client.get("Patient", params={"identifier": first["identifier"][0]["value"]})
    assert found.json().get("total", len(found.json().get("entry", []))) == 0
    assert (await client.get(f"ValueSet/{stored['id']}")).json()["status"] == "draft"


async def test_update_id_rules(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    mismatch = await client.put(f"Patient/{created['id']}", json={**created, "id": "other"})
    assert mismatch.status_code == 400
    assert expressions(mismatch) == ["Patient.id"]
    no_id = {k: v for k, v in created.items() if k != "id"}
    missing = await client.put(f"Patient/{created['id']}", json=no_id)
    assert missing.status_code == 400
    assert expressions(missing) == ["Patient.id"]
    assert (await client.get(f"Patient/{created['id']}")).json()["meta"]["versionId"] == "1"


async def test_routing_errors(client: httpx.AsyncClient) -> None:
    unknown_type = await client.get("Frobnicator/1")
    assert unknown_type.status_code == 404
    assert "Frobnicator" in outcome_issues(unknown_type)[0]["diagnostics"]
    bad_id = await client.get("Patient/" + "x" * 65)
    assert bad_id.status_code == 400
    not_allowed = await client.post(f"Patient/{unique()}", json=patient())
    assert not_allowed.status_code == 405
    assert "PUT" in not_allowed.headers["Allow"]
    assert (await client.get("Patient/1/2/3/4/5")).status_code == 404
    assert (await client.get("Patient/$everything")).status_code == 400


async def test_methods_outside_fhir_rest_are_405_with_allow(client: httpx.AsyncClient) -> None:
    """A method FHIR's REST API has no interaction for gets a 405 OperationOutcome naming the
    ones it has; paths beside the FHIR base are not FHIR's."""
    response = await client.request("OPTIONS", "Patient")
    assert response.status_code == 405
    assert outcome_issues(response)[0]["code"] == "not-supported"
    assert "PATCH" in response.headers["Allow"]
    fastapi_404 = await client.get("http://testserver/fhirpatient")
    assert fastapi_404.status_code == 404 and fastapi_404.json() == {"detail": "Not Found"}
    assert (await client.get("http://testserver/healthz")).json() == {"status": "ok"}


async def test_body_too_large_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    big = patient(text={"status": "generated",
                        "div": "<div>" + "x" * settings.max_body_bytes + "</div>"})
    response = await client.post("Patient", json=big)
    assert response.status_code == 413
    assert outcome_issues(response)[0]["code"] == "too-costly"


async def test_unsupported_media_types(client: httpx.AsyncClient) -> None:
    xml = await client.post("Patient", content=b"<Patient/>",
                            headers={"Content-Type": "application/fhir+xml"})
    assert xml.status_code == 415
    created = (await create(client, patient())).json()
    for params, headers in (({"_format": "xml"}, {}), ({}, {"Accept": "application/fhir+xml"}),
                            ({"_format": "text/turtle"}, {})):
        response = await client.get(f"Patient/{created['id']}", params=params, headers=headers)
        assert response.status_code == 406, (params, headers)
        assert outcome_issues(response)[0]["code"] == "not-supported"


async def test_bad_parameters(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    bad_summary = await client.get(f"Patient/{created['id']}", params={"_summary": "maybe"})
    assert bad_summary.status_code == 400
    assert expressions(bad_summary) == ["_summary"]
    for params in ({"_count": "-1"}, {"_since": "yesterday"}, {"_at": "2020-99"},
                   {"_cursor": "nonsense"}):
        response = await client.get("Patient/_history", params=params)
        assert response.status_code == 400, params
        assert expressions(response) == [next(iter(params))]
    malformed_etag = await client.put(f"Patient/{created['id']}", json=created,
                                      headers={"If-Match": 'W/""'})
    assert malformed_etag.status_code == 400


async def test_database_down_gives_503_with_retry_after(database_url: str) -> None:
    settings = Settings(retry_after_seconds=9)
    # Nothing listens on port 1: every connection attempt is refused.
    app = create_app(settings, "postgresql+asyncpg://santong@127.0.0.1:1/santong")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            for response in (await client.get("Patient/1"),
                             await client.post("Patient", json=patient())):
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "9"
                assert outcome_issues(response)[0]["code"] == "transient"
            ready = await client.get("http://t/readyz")
            assert ready.status_code == 503
            assert (await client.get("http://t/healthz")).status_code == 200


async def test_connections_lost_in_the_pool_give_503_once_and_are_replaced(
    database_url: str,
) -> None:
    """A database restart kills the pooled connections: the request that meets one gets a 503
    (no pre-ping round trip per request), the connection is discarded, the next request works."""
    app = create_app(Settings(db_pool_size=1, retry_after_seconds=4), database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            created = (await client.post("Patient", json=patient())).json()
            name = make_url(database_url).database
            await admin(database_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                        " AND backend_type = 'client backend'")
            statuses = [(await client.get(f"Patient/{created['id']}")).status_code
                        for _ in range(3)]
            assert statuses[0] in (200, 503) and statuses[1:] == [200, 200], statuses
            lost = await client.post("Patient", json=patient())
            assert lost.status_code == 201, lost.text


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1000 + b"1.50" + b"]" * 1000,
        b'{"resourceType":"Patient","extension":' + b"[{" * 600 + b"}]" * 600 + b"}",
        b'{"resourceType":"Patient","multipleBirthInteger":123456789012345678901234567890}',
        b'{"resourceType":"Patient","multipleBirthInteger":1.5}',
        b'{"resourceType":"Patient","multipleBirthInteger":true}',
        b'{"resourceType":"Patient","birthDate":null}',
        b'{"resourceType":"Patient","name":[null]}',
        b'{"resourceType":"Patient","id":"\xff\xfe"}',
        b'{"resourceType":"Patient","contained":[{"resourceType":"Nope"}]}',
        b'{"resourceType":"Patient","contained":[1]}',
        b'{"resourceType":"Patient","_gender":"x"}',
        b'{"resourceType":"Patient","meta":{"lastUpdated":"yesterday"}}',
        b'{"resourceType":"Patient","gender":NaN}',
        b'{"resourceType":"Patient","gender":"male","gender":"female","x":1}',
        b'{"resourceType":["Patient"]}',
        b'"Patient"',
        b"null",
        b"{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"\\ud800\"}]}",
    ],
)
async def test_hostile_bodies_get_4xx_not_500(client: httpx.AsyncClient, body: bytes) -> None:
    for method, url in (("POST", "Patient"), ("PUT", f"Patient/{unique()}")):
        response = await client.request(method, url, content=body,
                                        headers={"Content-Type": "application/fhir+json"})
        assert 400 <= response.status_code < 500, (method, response.status_code, response.text)
        assert outcome_issues(response)[0]["severity"] in ("error", "fatal")


async def test_a_statement_cut_off_by_a_server_shutdown_counts_as_unavailable(
    database_url: str,
) -> None:
    """The server terminating a backend mid-statement (a restart, an administrator) is the
    database being unavailable (503), and the connection is discarded, not pooled again."""
    import asyncio

    from santong.fhir.router import is_database_unavailable
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    engine = create_engine(database_url, pool_size=1)
    try:
        repository = Repository(engine)
        async with repository.reading() as tx:
            pid = (await tx.connection.execute("SELECT pg_backend_pid()")).scalar_one()

        async def sleep_on_it() -> None:
            async with repository.reading() as tx:
                await tx.connection.execute("SELECT pg_sleep(30)")

        sleeper = asyncio.create_task(sleep_on_it())
        await asyncio.sleep(0.5)
        await admin(database_url, f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(Exception) as raised:
            await asyncio.wait_for(sleeper, 10)
        assert is_database_unavailable(raised.value), repr(raised.value)
        async with repository.reading() as tx:  # the pool's one connection is a new one
            assert (await tx.connection.execute("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        await engine.dispose()
