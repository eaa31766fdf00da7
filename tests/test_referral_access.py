"""Referrals in the medical community: an upward referral to a member organization opens its
Task; accepting it grants the receiving organization the patient's record under the patient's
sharing Consent (recorded in referral_access; santong.workflow.access builds the filter the
authorization layer will apply; here a request context applies it as that layer will)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tests.helpers import create, unique
from tests.test_referral_workflow import DIRECTION_CS, REFERRAL_NO, business, in_state, ref

from santong.fhir import jsonio
from santong.fhir.context import RequestContext
from santong.fhir.request import FhirRequest
from santong.workflow import access, community

LOCAL = "http://santong.example.org/fhir"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"


@dataclass(frozen=True, slots=True)
class ActingFor(RequestContext):
    """A caller acting for an organization, limited to what referrals share with it: how the
    authorization layer will use santong.workflow.access."""

    organization: str = ""

    def search_filter(self, resource_type: str) -> tuple[str, dict[str, Any]] | None:
        return access.shared_with(self.organization, resource_type) or ("false", {})


async def _community(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """An alliance led by a county hospital (with a cardiology department), a township
    centre affiliated to it, a private clinic outside it, a GP and a patient with a record."""
    made: dict[str, dict[str, Any]] = {}
    for key, resource in {
        "alliance": {"resourceType": "Organization", "name": "桐庐县医共体"},
        "hospital": {"resourceType": "Organization", "name": "桐庐县人民医院"},
        "centre": {"resourceType": "Organization", "name": "分水镇中心卫生院"},
        "clinic": {"resourceType": "Organization", "name": "某民营诊所"},
        "gp": {"resourceType": "Practitioner", "name": [{"family": "李", "given": ["建国"]}]},
        "patient": {"resourceType": "Patient", "name": [{"family": "王", "given": ["桂英"]}],
                    "identifier": [{"system": "urn:santong:test", "value": unique()}]},
    }.items():
        made[key] = (await create(client, resource)).json()
    made["cardiology"] = (await create(client, {
        "resourceType": "Organization", "name": "心血管内科",
        "partOf": ref(made["hospital"])})).json()
    made["affiliation"] = (await create(client, {
        "resourceType": "OrganizationAffiliation", "active": True,
        "organization": ref(made["hospital"]), "participatingOrganization": ref(made["centre"]),
        "network": [ref(made["alliance"])]})).json()
    subject = ref(made["patient"])
    made["encounter"] = (await create(client, {
        "resourceType": "Encounter", "status": "finished", "subject": subject,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                  "code": "AMB"}})).json()
    made["condition"] = (await create(client, {
        "resourceType": "Condition", "subject": subject, "code": {"text": "高血压"}})).json()
    made["careplan"] = (await create(client, {
        "resourceType": "CarePlan", "status": "active", "intent": "plan",
        "subject": subject})).json()
    made["observation"] = (await create(client, {
        "resourceType": "Observation", "status": "final", "code": {"text": "血压"},
        "subject": subject})).json()
    return made


def _consent(c: dict[str, dict[str, Any]], recipient: dict[str, Any], **extra: Any
             ) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": ref(c["patient"]), "organization": [ref(c["alliance"])],
            "policyRule": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "OPTIN"}]},
            "provision": {"type": "permit", "period": {"start": "2024-01-01"},
                          "actor": [{"role": {"coding": [{
                              "system": "http://terminology.hl7.org/CodeSystem/"
                                        "v3-ParticipationType", "code": "IRCP"}]},
                              "reference": ref(recipient)}]}, **extra}


def _referral(c: dict[str, dict[str, Any]], performer: dict[str, Any], direction: str = "up"
              ) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": REFERRAL_NO, "value": unique("ZZ")}],
            "category": [{"coding": [{"system": DIRECTION_CS, "code": direction}]}],
            "code": {"text": "门诊转诊"}, "subject": ref(c["patient"]),
            "requester": ref(c["gp"]), "performer": [ref(performer)],
            "authoredOn": "2025-04-10T09:40:00+08:00"}


async def _tasks(client: httpx.AsyncClient, request: dict[str, Any]) -> list[dict[str, Any]]:
    found = (await client.get("Task", params={
        "focus": f"ServiceRequest/{request['id']}"})).json()
    return [e["resource"] for e in found.get("entry", [])]


async def test_an_upward_referral_to_a_member_opens_its_task(client: httpx.AsyncClient) -> None:
    c = await _community(client)
    request = (await create(client, _referral(c, c["cardiology"]))).json()
    [task] = await _tasks(client, request)
    assert task["businessStatus"]["coding"][0]["code"] == "submitted"
    assert task["status"] == "requested"
    assert task["owner"]["reference"] == f"Organization/{c['cardiology']['id']}"
    assert task["for"] == ref(c["patient"]) and task["requester"] == ref(c["gp"])
    assert task["identifier"] == request["identifier"]
    # …and meets the package's referral Task profile
    checked = (await client.post("Task/$validate", params={
        "profile": f"{LOCAL}/StructureDefinition/santong-referral-task"}, json=task)).json()
    assert [i for i in checked["issue"] if i["severity"] == "error"] == [], checked
    # Downward, to an organization outside the community, or to a lead hospital with no
    # affiliation: no Task.
    assert await _tasks(client, (await create(client, _referral(c, c["centre"], "down"))
                                 ).json()) == []
    assert await _tasks(client, (await create(client, _referral(c, c["clinic"]))).json()) == []
    # The client sends its own Task with the referral (either order): only its own remains.
    for order in ((0, 1), (1, 0)):
        urn_request, urn_task = f"urn:uuid:{unique('r')[2:]}", f"urn:uuid:{unique('t')[2:]}"
        own_task = {"resourceType": "Task", "status": "requested",
                    "businessStatus": business("submitted"), "intent": "order",
                    "focus": {"reference": urn_request}, "for": ref(c["patient"]),
                    "owner": ref(c["hospital"]), "description": "own"}
        entries = [{"fullUrl": urn_request, "resource": _referral(c, c["hospital"]),
                    "request": {"method": "POST", "url": "ServiceRequest"}},
                   {"fullUrl": urn_task, "resource": own_task,
                    "request": {"method": "POST", "url": "Task"}}]
        response = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                               "entry": [entries[i] for i in order]})
        assert response.status_code == 200, response.text
        location = response.json()["entry"][order.index(0)]["response"]["location"]
        request_id = location.split("ServiceRequest/")[1].split("/")[0]
        tasks = await _tasks(client, {"id": request_id})
        assert [t.get("description") for t in tasks] == ["own"], order
    # …or later, in a request of its own: the Task the server opened then is replaced too,
    # while one the receiver has already moved on is kept.
    for moved in (False, True):
        request = (await create(client, _referral(c, c["hospital"]))).json()
        [opened] = await _tasks(client, request)
        if moved:
            opened = (await client.put(f"Task/{opened['id']}",
                                       json=in_state(opened, "accepted"))).json()
        own = await client.post("Task", json={
            "resourceType": "Task", "status": "requested", "intent": "order",
            "businessStatus": business("submitted"), "description": "own",
            "focus": ref(request), "for": ref(c["patient"]), "owner": ref(c["hospital"])})
        assert own.status_code == 201, own.text
        left = sorted((t.get("description") or t["id"]) for t in await _tasks(client, request))
        assert left == (sorted([opened["id"], "own"]) if moved else ["own"]), moved


async def _accept(client: httpx.AsyncClient, c: dict[str, dict[str, Any]],
                  owner: dict[str, Any]) -> dict[str, Any]:
    request = (await create(client, _referral(c, owner))).json()
    [task] = await _tasks(client, request)
    response = await client.put(f"Task/{task['id']}", json=in_state(task, "accepted"))
    assert response.status_code == 200, response.text
    return response.json()


async def _visible(client: httpx.AsyncClient, organization: dict[str, Any], path: str,
                   params: list[tuple[str, str]]) -> list[str]:
    """What a caller acting for `organization` finds, through the router's search."""
    router = client._transport.app.state.router  # type: ignore[attr-defined]
    response = await router.handle(FhirRequest(
        method="GET", path=path, query=params, base_url="http://testserver/fhir",
        context=ActingFor(organization=organization["id"])))
    assert response.status == 200, response.resource
    body = orjson.loads(response.body if response.body is not None
                        else jsonio.dumps(response.resource))
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}"
                  for e in body.get("entry", []))


async def test_accepting_shares_the_record_under_the_consent(client: httpx.AsyncClient) -> None:
    c = await _community(client)
    patient_id = c["patient"]["id"]
    record = sorted(f"{r['resourceType']}/{r['id']}"
                    for r in (c["encounter"], c["condition"], c["careplan"]))

    async def seen(organization: dict[str, Any]) -> list[str]:
        found = await _visible(client, organization, "Patient", [
            ("_id", patient_id), ("_revinclude", "Encounter:subject"),
            ("_revinclude", "Condition:subject"), ("_revinclude", "CarePlan:subject"),
            ("_revinclude", "Observation:subject")])
        return found

    # No consent yet: accepting shares nothing.
    await _accept(client, c, c["hospital"])
    assert await seen(c["hospital"]) == []
    # A sharing consent naming the community covers the hospital and its departments.
    consent = (await create(client, _consent(c, c["alliance"]))).json()
    task = await _accept(client, c, c["cardiology"])
    assert await seen(c["cardiology"]) == sorted([f"Patient/{patient_id}", *record])
    [grant] = [g for g in await _grants(client, c["cardiology"]) if g.task_id == task["id"]]
    assert (grant.patient_id, grant.consent_id, grant.revoked_at) == (
        patient_id, consent["id"], None)
    # Observations are not part of what a referral shares; other organizations see nothing.
    assert "Observation" not in " ".join(await seen(c["cardiology"]))
    assert await seen(c["clinic"]) == []
    assert await seen(c["hospital"]) == []  # its earlier acceptance had no consent
    # Withdrawing the consent ends the sharing at once.
    await client.put(f"Consent/{consent['id']}", json={**consent, "status": "inactive"})
    assert await seen(c["cardiology"]) == []
    await client.put(f"Consent/{consent['id']}", json={**consent, "status": "active"})
    assert await seen(c["cardiology"]) != []
    # Cancelling the referral revokes the grant.
    cancelled = await client.put(f"Task/{task['id']}", json=in_state(task, "cancelled"))
    assert cancelled.status_code == 200, cancelled.text
    assert await seen(c["cardiology"]) == []


async def test_deleting_the_referral_task_revokes_the_grant(client: httpx.AsyncClient) -> None:
    c = await _community(client)
    await create(client, _consent(c, c["alliance"]))
    tasks = [await _accept(client, c, c["cardiology"]) for _ in range(2)]
    patient = [("_id", c["patient"]["id"])]
    assert await _visible(client, c["cardiology"], "Patient", patient) != []

    async def revoked() -> dict[str, bool]:
        return {g.task_id: g.revoked_at is not None
                for g in await _grants(client, c["cardiology"])}

    assert await revoked() == {tasks[0]["id"]: False, tasks[1]["id"]: False}
    # DELETE, and a transaction's DELETE entry: each revokes its own Task's grant only.
    response = await client.delete(f"Task/{tasks[0]['id']}")
    assert response.status_code in (200, 204), response.text
    assert await revoked() == {tasks[0]["id"]: True, tasks[1]["id"]: False}
    assert await _visible(client, c["cardiology"], "Patient", patient) != []  # the other one
    response = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                           "entry": [{"request": {
                                               "method": "DELETE",
                                               "url": f"Task/{tasks[1]['id']}"}}]})
    assert response.status_code == 200, response.text
    assert await revoked() == {tasks[0]["id"]: True, tasks[1]["id"]: True}
    assert await _visible(client, c["cardiology"], "Patient", patient) == []


async def test_a_consent_that_does_not_cover_the_receiver_shares_nothing(
        client: httpx.AsyncClient) -> None:
    c = await _community(client)
    await create(client, _consent(c, c["clinic"]))  # names someone else
    await create(client, _consent(c, c["alliance"], status="inactive"))
    await create(client, _consent(c, c["alliance"], provision={
        **_consent(c, c["alliance"])["provision"], "period": {"start": "2020-01-01",
                                                              "end": "2021-01-01"}}))
    await create(client, {**_consent(c, c["alliance"]), "scope": {"coding": [
        {"system": CONSENT_SCOPE, "code": "treatment"}]}})
    task = await _accept(client, c, c["hospital"])
    assert task["businessStatus"]["coding"][0]["code"] == "accepted"
    assert await _grants(client, c["hospital"]) == []
    assert await _visible(client, c["hospital"], "Encounter",
                          [("subject", f"Patient/{c['patient']['id']}")]) == []


async def test_the_covering_consent_is_found_among_many(client: httpx.AsyncClient) -> None:
    """Consents the search cannot rule out (naming the community, but expired) come first in
    id order, more than a hundred (the old single page): the covering one after them is found."""
    c = await _community(client)
    prefix = unique("consent")
    expired = _consent(c, c["alliance"])
    expired["provision"]["period"] = {"start": "2020-01-01", "end": "2021-01-01"}
    entries = [{"resource": {**expired, "id": f"{prefix}-a{n:03}"},
                "request": {"method": "PUT", "url": f"Consent/{prefix}-a{n:03}"}}
               for n in range(105)]
    entries.append({"resource": {**_consent(c, c["alliance"]), "id": f"{prefix}-z"},
                    "request": {"method": "PUT", "url": f"Consent/{prefix}-z"}})
    for start in range(0, len(entries), 40):  # within the test server's body limit
        response = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                               "entry": entries[start:start + 40]})
        assert response.status_code == 200, response.text
    task = await _accept(client, c, c["hospital"])
    [grant] = [g for g in await _grants(client, c["hospital"]) if g.task_id == task["id"]]
    assert grant.consent_id == f"{prefix}-z"


async def _grants(client: httpx.AsyncClient, organization: dict[str, Any]
                  ) -> list[access.Grant]:
    router = client._transport.app.state.router  # type: ignore[attr-defined]
    async with router.repository.transaction() as tx:
        return await access.grants(tx, organization["id"])


async def test_membership_follows_departments_and_affiliations(
        client: httpx.AsyncClient) -> None:
    c = await _community(client)
    router = client._transport.app.state.router  # type: ignore[attr-defined]
    async with router.repository.transaction() as tx:
        assert await community.ancestors(tx, c["cardiology"]["id"]) == [
            c["cardiology"]["id"], c["hospital"]["id"]]
        assert await community.is_member(tx, c["cardiology"]["id"])
        assert await community.is_member(tx, c["centre"]["id"])
        assert not await community.is_member(tx, c["clinic"]["id"])
        assert await community.belongs_to(tx, c["centre"]["id"]) == {
            c["centre"]["id"], c["hospital"]["id"], c["alliance"]["id"]}


async def test_membership_counts_only_active_affiliations_on_either_side(
        client: httpx.AsyncClient) -> None:
    """`active` absent counts, `active: false` does not; the lead organization belongs to the
    networks of every active affiliation it leads, and an affiliation written earlier in the
    same transaction counts."""
    async def organization(name: str) -> dict[str, Any]:
        return (await create(client, {"resourceType": "Organization", "name": name})).json()

    lead, unmarked, inactive, later = [await organization(n) for n in (
        "县医院", "甲乡卫生院", "乙乡卫生院", "丙乡卫生院")]
    networks = [await organization(f"医共体{n}") for n in range(3)]

    def affiliation(member: dict[str, Any], network: dict[str, Any], **active: bool
                    ) -> dict[str, Any]:
        return {"resourceType": "OrganizationAffiliation", **active, "organization": ref(lead),
                "participatingOrganization": ref(member), "network": [ref(network)]}

    await create(client, affiliation(unmarked, networks[0]))
    await create(client, affiliation(inactive, networks[1], active=False))
    router = client._transport.app.state.router  # type: ignore[attr-defined]
    async with router.repository.transaction() as tx:
        assert await community.is_member(tx, unmarked["id"])
        assert not await community.is_member(tx, inactive["id"])
        assert not await community.is_member(tx, later["id"])
        assert await community.is_member(tx, lead["id"])
        assert await community.belongs_to(tx, lead["id"]) == {lead["id"], networks[0]["id"]}
        assert await community.belongs_to(tx, inactive["id"]) == {inactive["id"]}
        assert await community.belongs_to(tx, unmarked["id"]) == {
            unmarked["id"], lead["id"], networks[0]["id"]}
    # A transaction Bundle affiliating `later` and referring up to it: the Task is opened.
    response = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                           "entry": [
        {"resource": affiliation(later, networks[2], active=True),
         "request": {"method": "POST", "url": "OrganizationAffiliation"}},
        {"resource": _referral(await _community(client), later),
         "request": {"method": "POST", "url": "ServiceRequest"}}]})
    assert response.status_code == 200, response.text
    location = response.json()["entry"][1]["response"]["location"]
    request_id = location.split("ServiceRequest/")[1].split("/")[0]
    [task] = await _tasks(client, {"id": request_id})
    assert task["owner"]["reference"] == f"Organization/{later['id']}"
    async with router.repository.transaction() as tx:
        assert await community.belongs_to(tx, lead["id"]) == {
            lead["id"], networks[0]["id"], networks[2]["id"]}
