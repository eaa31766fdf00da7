"""The referral workflow (双向转诊, the service connection) end to end over REST.

A township health centre refers a hypertensive patient up to the county hospital; the hospital
accepts, books an appointment, the patient arrives and is seen, and is referred back down with
an updated CarePlan. Every step is a FHIR REST call; the Task's businessStatus state machine
(santong.workflow.referral) refuses the illegal moves along the way, whichever way they come
(PUT, PATCH, transaction Bundle)."""

from __future__ import annotations

from typing import Any

import httpx
from tests.helpers import create, expressions, outcome_issues, unique

LOCAL = "http://santong.example.org/fhir"
STATUS_CS = f"{LOCAL}/CodeSystem/referral-business-status"
DIRECTION_CS = f"{LOCAL}/CodeSystem/referral-direction"
REFERRAL_NO = f"{LOCAL}/sid/referral-number"
MIGRATED = {"system": f"{LOCAL}/CodeSystem/workflow-control", "code": "migrated"}
ICD10 = "urn:oid:2.16.156.10011.2.3.3.11"
PATCH_JSON = {"Content-Type": "application/json-patch+json"}
# businessStatus → Task.status (santong.workflow.referral.STATUS)
TASK_STATUS = {"submitted": "requested", "accepted": "accepted", "scheduled": "ready",
               "arrived": "in-progress", "returned": "completed", "completed": "completed",
               "cancelled": "cancelled", "declined": "rejected"}


def ref(resource: dict[str, Any], display: str | None = None) -> dict[str, str]:
    reference = {"reference": f"{resource['resourceType']}/{resource['id']}"}
    if display:
        reference["display"] = display
    return reference


def business(code: str) -> dict[str, Any]:
    return {"coding": [{"system": STATUS_CS, "code": code}]}


def in_state(task: dict[str, Any], code: str) -> dict[str, Any]:
    return {**task, "status": TASK_STATUS[code], "businessStatus": business(code)}


def referral_task(number: str, request: str, patient: dict[str, Any],
                  requester: dict[str, Any], owner: dict[str, Any], state: str = "submitted",
                  **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "identifier": [{"system": REFERRAL_NO, "value": number}],
            "status": TASK_STATUS[state], "businessStatus": business(state), "intent": "order",
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill"}]},
            "focus": {"reference": request}, "for": ref(patient),
            "authoredOn": "2024-05-06T09:00:00+08:00", "requester": ref(requester),
            "owner": ref(owner), **extra}


async def put(client: httpx.AsyncClient, resource: dict[str, Any], status: int = 200
              ) -> dict[str, Any]:
    response = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == status, response.text
    return response.json()


def refusal(response: httpx.Response, expression: str = "Task.businessStatus") -> str:
    """The diagnostics of a workflow refusal (422, business-rule, the expression given)."""
    assert response.status_code == 422, response.text
    assert expression in expressions(response)[-1], response.text
    issue = outcome_issues(response)[-1]
    assert issue["code"] == "business-rule"
    return str(issue["diagnostics"])


async def community(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The cast: two facilities, two doctors, the patient, her diagnosis and care plan."""
    tag = unique("zz")
    made: dict[str, dict[str, Any]] = {}
    for key, resource in {
        "centre": {"resourceType": "Organization", "name": "横村镇中心卫生院"},
        "hospital": {"resourceType": "Organization", "name": "桐庐县第一人民医院"},
        "gp": {"resourceType": "Practitioner", "name": [{"family": "王", "given": ["芳"]}]},
        "cardiologist": {"resourceType": "Practitioner",
                         "name": [{"family": "李", "given": ["强"]}]},
        "patient": {"resourceType": "Patient", "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.3", "value": tag}],
            "name": [{"family": "陈", "given": ["桂英"]}], "gender": "female",
            "birthDate": "1956-03-12"},
    }.items():
        made[key] = (await create(client, resource)).json()
    made["condition"] = (await create(client, {
        "resourceType": "Condition", "subject": ref(made["patient"]),
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "code": {"coding": [{"system": ICD10, "code": "I10", "display": "特发性（原发性）高血压"}]},
    })).json()
    made["careplan"] = (await create(client, {
        "resourceType": "CarePlan", "status": "active", "intent": "plan",
        "title": "高血压健康管理", "subject": ref(made["patient"]),
        "addresses": [ref(made["condition"])], "author": ref(made["gp"]),
        "activity": [{"detail": {"status": "in-progress", "description": "氨氯地平 5mg qd"}}],
    })).json()
    made["tag"] = {"value": tag}
    return made


async def test_a_referral_up_and_back_down(client: httpx.AsyncClient) -> None:
    c = await community(client)
    patient, centre, hospital = c["patient"], c["centre"], c["hospital"]
    number = f"ZZ{c['tag']['value']}"

    # 1. The township GP refers the patient up: ServiceRequest + Task (submitted), one Bundle.
    request_urn, task_urn = "urn:uuid:0d9b3c1e-3f0a-4c55-9b0e-1f2d3c4b5a61", \
        "urn:uuid:7a1e2b3c-4d5e-4f60-8172-93a4b5c6d7e8"
    service_request = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": REFERRAL_NO, "value": number}],
        "status": "active", "intent": "order",
        "category": [{"coding": [{"system": DIRECTION_CS, "code": "up", "display": "上转"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}],
                 "text": "门诊转诊"},
        "subject": ref(patient), "requester": ref(c["gp"]), "performer": [ref(hospital)],
        "reasonCode": [{"text": "血压控制不满意，需调整用药方案"}],
        "reasonReference": [ref(c["condition"])], "supportingInfo": [ref(c["careplan"])],
    }
    task = referral_task(number, request_urn, patient, c["gp"], hospital,
                         description="上转：血压控制不满意")
    response = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                           "entry": [
        {"fullUrl": request_urn, "resource": service_request,
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"fullUrl": task_urn, "resource": task, "request": {"method": "POST", "url": "Task"}}]})
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created"] * 2
    found = (await client.get("Task", params={"identifier": f"{REFERRAL_NO}|{number}"})).json()
    task = found["entry"][0]["resource"]
    service_request = (await client.get(task["focus"]["reference"])).json()
    assert task["businessStatus"]["coding"][0]["code"] == "submitted"

    # The hospital cannot skip ahead: submitted → arrived is refused, naming the way on.
    skipped = await client.put(f"Task/{task['id']}", json=in_state(task, "arrived"))
    message = refusal(skipped)
    assert "'submitted' to 'arrived'" in message
    assert "received, accepted, declined, cancelled" in message

    # 2. The hospital accepts (and Task.status must move with the business status).
    wrong_status = await client.put(f"Task/{task['id']}", json={
        **in_state(task, "accepted"), "status": "in-progress"})
    assert "'accepted'" in refusal(wrong_status, "Task.status")
    task = await put(client, {**in_state(task, "accepted"), "owner": ref(hospital, "心血管内科")})
    assert task["meta"]["versionId"] == "2"

    # 3. It books an appointment and moves the Task on by PATCH.
    appointment = (await create(client, {
        "resourceType": "Appointment", "status": "booked", "description": "上转就诊",
        "start": "2024-05-08T09:00:00+08:00", "end": "2024-05-08T09:15:00+08:00",
        "basedOn": [ref(service_request)],
        "participant": [{"actor": ref(patient), "status": "accepted"},
                         {"actor": ref(c["cardiologist"]), "status": "accepted"},
                         {"actor": ref(hospital), "status": "accepted"}]})).json()
    patched = await client.patch(f"Task/{task['id']}", headers=PATCH_JSON, content=(
        b'[{"op": "replace", "path": "/businessStatus/coding/0/code", "value": "completed"},'
        b' {"op": "replace", "path": "/status", "value": "completed"}]'))
    assert "allowed next states: scheduled, on-hold, cancelled" in refusal(patched)
    patched = await client.patch(f"Task/{task['id']}", headers=PATCH_JSON, content=(
        b'[{"op": "replace", "path": "/businessStatus/coding/0/code", "value": "scheduled"},'
        b' {"op": "replace", "path": "/status", "value": "ready"}]'))
    assert patched.status_code == 200, patched.text
    task = patched.json()

    # 4. The patient arrives: the Encounter (basedOn the referral) and the Task in one Bundle.
    encounter = {
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": ref(patient), "basedOn": [ref(service_request)],
        "appointment": [ref(appointment)], "serviceProvider": ref(hospital),
        "participant": [{"individual": ref(c["cardiologist"])}],
        "period": {"start": "2024-05-08T09:05:00+08:00"},
        "reasonReference": [ref(c["condition"])],
    }
    encounter_urn = "urn:uuid:5c7d8e9f-0a1b-4c2d-8e3f-405162738495"
    # A Bundle that also tries an illegal move is refused whole: no Encounter is written.
    refused = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": [
        {"fullUrl": encounter_urn, "resource": encounter,
         "request": {"method": "POST", "url": "Encounter"}},
        {"resource": in_state(task, "returned"),
         "request": {"method": "PUT", "url": f"Task/{task['id']}"}}]})
    assert refused.status_code == 422, refused.text
    assert "'scheduled' to 'returned'" in refused.text
    by_referral = await client.get("Encounter", params={
        "based-on": f"ServiceRequest/{service_request['id']}"})
    assert "entry" not in by_referral.json()
    arrived = await client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": [
        {"fullUrl": encounter_urn, "resource": encounter,
         "request": {"method": "POST", "url": "Encounter"}},
        {"resource": {**in_state(task, "arrived"),
                      "executionPeriod": {"start": "2024-05-08T09:05:00+08:00"}},
         "request": {"method": "PUT", "url": f"Task/{task['id']}"}},
        {"resource": {**appointment, "status": "arrived"},
         "request": {"method": "PUT", "url": f"Appointment/{appointment['id']}"}}]})
    assert arrived.status_code == 200, arrived.text
    encounter = (await client.get(arrived.json()["entry"][0]["response"]["location"]
                                  .split("/_history")[0])).json()
    assert encounter["basedOn"] == [ref(service_request)]
    task = (await client.get(f"Task/{task['id']}")).json()
    assert (task["status"], task["meta"]["versionId"]) == ("in-progress", "4")
    # Once arrived, the referral can no longer be cancelled.
    assert "completed, returned" in refusal(
        await client.put(f"Task/{task['id']}", json=in_state(task, "cancelled")))

    # 5. Seen: blood pressure, the visit closes, the appointment is fulfilled.
    await create(client, {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": ref(patient), "encounter": ref(encounter),
        "effectiveDateTime": "2024-05-08T09:20:00+08:00",
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 168, "unit": "mmHg",
                               "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 102, "unit": "mmHg",
                               "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]})
    await put(client, {**encounter, "status": "finished",
                       "period": {"start": "2024-05-08T09:05:00+08:00",
                                  "end": "2024-05-08T10:00:00+08:00"}})
    await put(client, {**appointment, "status": "fulfilled"})

    # 6. Referred back down: a downward referral to the centre, the care plan updated, the
    #    upward referral returned (回转) with the visit as its output.
    back_number = f"{number}-D"
    back_request = (await create(client, {
        **{k: v for k, v in service_request.items() if k not in ("id", "meta")},
        "identifier": [{"system": REFERRAL_NO, "value": back_number}], "intent": "plan",
        "category": [{"coding": [{"system": DIRECTION_CS, "code": "down", "display": "下转"}]}],
        "code": {"text": "康复转诊"}, "basedOn": [ref(service_request)],
        "requester": ref(c["cardiologist"]), "performer": [ref(centre)],
        "reasonCode": [{"text": "血压已控制，转回基层随访管理"}],
        "supportingInfo": [ref(encounter)]})).json()
    back_task = (await create(client, referral_task(
        back_number, f"ServiceRequest/{back_request['id']}", patient, c["cardiologist"],
        centre, partOf=[ref(task)]))).json()
    careplan = await put(client, {
        **c["careplan"], "author": ref(c["cardiologist"]), "supportingInfo": [ref(encounter)],
        "activity": [
            {"detail": {"status": "stopped", "description": "氨氯地平 5mg qd"}},
            {"detail": {"status": "scheduled", "description": "氨氯地平 10mg qd + 缬沙坦 80mg qd"}},
            {"detail": {"status": "scheduled", "description": "两周后基层随访，测量血压",
                        "performer": [ref(c["gp"])]}}]})
    assert careplan["meta"]["versionId"] == "2"
    task = await put(client, {
        **in_state(task, "returned"),
        "executionPeriod": {"start": "2024-05-08T09:05:00+08:00",
                            "end": "2024-05-08T10:00:00+08:00"},
        "output": [{"type": {"text": "回转单"}, "valueReference": ref(back_request)}]})
    await put(client, {**service_request, "status": "completed"})

    # Returned is final: the referral cannot be reopened, nor stop being a referral.
    reopened = await client.put(f"Task/{task['id']}", json=in_state(task, "accepted"))
    assert refusal(reopened).endswith("allowed next states: entered-in-error")
    dropped = await client.put(f"Task/{task['id']}", json={
        **{k: v for k, v in task.items() if k != "businessStatus"}})
    refusal(dropped)
    # Re-sending the same state (a correction elsewhere in the Task) is fine.
    task = await put(client, {**task, "note": [{"text": "患者已回基层"}]})

    # The centre accepts the patient back.
    back_task = await put(client, in_state(back_task, "accepted"))

    # The upward Task's history is the workflow, step by step.
    history = (await client.get(f"Task/{task['id']}/_history")).json()
    steps = [e["resource"]["businessStatus"]["coding"][0]["code"]
             for e in reversed(history["entry"])]
    assert steps == ["submitted", "accepted", "scheduled", "arrived", "returned", "returned"]
    down = (await client.get("Task", params={"focus": f"ServiceRequest/{back_request['id']}"}
                             )).json()
    assert [e["resource"]["id"] for e in down["entry"]] == [back_task["id"]]


async def test_creation_starts_the_workflow(client: httpx.AsyncClient) -> None:
    c = await community(client)
    request = (await create(client, {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": ref(c["patient"])})).json()
    focus = f"ServiceRequest/{request['id']}"

    def task(state: str, **extra: Any) -> dict[str, Any]:
        return referral_task(unique("n"), focus, c["patient"], c["gp"], c["hospital"], state,
                             **extra)

    late = await client.post("Task", json=task("accepted"))
    assert "starts in business status submitted, draft" in refusal(late)
    mismatch = await client.post("Task", json={**task("submitted"), "status": "accepted"})
    refusal(mismatch, "Task.status")
    no_focus = await client.post("Task", json={
        k: v for k, v in task("submitted").items() if k != "focus"})
    refusal(no_focus, "Task.focus")
    unknown = await client.post("Task", json={**task("submitted"),
                                              "businessStatus": business("lost")})
    assert "Unknown referral business status 'lost'" in refusal(unknown)

    # Copied in from another system with the referral under way: tagged, or PUT to its id.
    migrated = await client.post("Task", json={**task("scheduled"), "meta": {"tag": [MIGRATED]}})
    assert migrated.status_code == 201, migrated.text
    copied_id = unique("copied")
    copied = await client.put(f"Task/{copied_id}", json={**task("completed"), "id": copied_id})
    assert copied.status_code == 201, copied.text
    # …but from then on it moves like any other: completed is final.
    refusal(await client.put(f"Task/{copied_id}", json={
        **copied.json(), "status": "ready", "businessStatus": business("scheduled")}))

    # A Task that is not a referral is not constrained; one that becomes one starts it.
    plain = (await create(client, {"resourceType": "Task", "status": "completed",
                                   "intent": "order"})).json()
    assert (await client.put(f"Task/{plain['id']}", json={**plain, "status": "ready"})
            ).status_code == 200
    refusal(await client.put(f"Task/{plain['id']}", json={
        **task("accepted"), "id": plain["id"]}))

    # Deleting ends the referral; the id may then start a new one.
    started = (await client.post("Task", json=task("submitted"))).json()
    cancelled = await put(client, in_state(started, "cancelled"))
    assert (await client.delete(f"Task/{started['id']}")).status_code in (200, 204)
    await put(client, in_state(cancelled, "submitted"), status=201)

    # Bundles obey the same rule as REST creates.
    refused = await client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": task("arrived"), "request": {"method": "POST", "url": "Task"}},
        {"resource": task("submitted"), "request": {"method": "POST", "url": "Task"}}]})
    assert refused.status_code == 200, refused.text
    assert [e["response"]["status"][:3] for e in refused.json()["entry"]] == ["422", "201"]
