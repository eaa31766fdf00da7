"""The referral (双向转诊) workflow: the business-status state machine of referral Tasks.

A *referral Task* is a Task whose `businessStatus` has a coding in the referral-business-status
CodeSystem (`santong.generate.codes.CS_REFERRAL_STATUS`); its `focus` is the referral
ServiceRequest. Its business status moves only along these edges:

    draft ──► submitted ──► received ──► accepted ──► scheduled ──► arrived ──► completed
                 │              │           │  ▲          │              └────► returned
                 │              │           ▼  │          └──► unattended (no-show)
                 │              │         on-hold
                 ├──────────────┴──► declined
                 └── submitted, received, accepted, on-hold, scheduled ──► cancelled

and, from any state, to `entered-in-error` (a record made by mistake). `declined`,
`cancelled`, `unattended`, `completed`, `returned` and `entered-in-error` are final. Writing
the same state again is always allowed (a correction of other elements). The codes are the
generator's (`santong.generate.codes.TASK_FLOW`): `unattended` (逾期未到诊) is the no-show;
`returned` (已回转, seen and referred back down) is the one code it does not have yet.

FHIR's own `Task.status` must agree with the business status (`STATUS` below; the same
mapping the generator uses, with `returned` → `completed`): a Task whose status disagrees is
rejected, so a client moving the business status moves the status with it.

A referral Task is created (its first version, or its first version after a delete) in
`submitted` or `draft`. Records copied from another system with the referral already under way
are the exception: any (consistent) state is accepted as the first one when the Task carries
the tag `MIGRATED` in `meta.tag`, or when it is written by PUT to an id of the client's choosing
(update-as-create) — the way `santong load`, `santong generate --load` and the benchmark copy
records in. A referral created here (POST) must start the workflow.
Every violation is a 422 OperationOutcome (`business-rule`) whose expression is
`Task.businessStatus` (or `Task.status`, `Task.focus`) and whose text names the allowed
states. `check_create` and `check_update` are called by `fhir/storing.py` for every write of
a Task, so REST create/update, PATCH and batch/transaction Bundles all obey it.

Creating (POST) an upward referral — a ServiceRequest whose category is `up` in the
referral-direction CodeSystem — to a member of the medical community (or a department of one,
:mod:`santong.workflow.community`) opens its Task (`open_task`): submitted, owned by the
receiving organization, tagged `automatic`. A client that sends its own Task for the referral
(in the same Bundle, or later) replaces that one while it is untouched, so a referral has one
Task either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from santong.fhir.outcome import error
from santong.fhir.versioning import instant, now
from santong.storage.repository import Transaction
from santong.workflow import community

SYSTEM = "http://santong.example.org/fhir/CodeSystem/referral-business-status"
MIGRATED = {"system": "http://santong.example.org/fhir/CodeSystem/workflow-control",
            "code": "migrated"}

# businessStatus → the Task.status it goes with, and its 中文 display.
STATUS: dict[str, tuple[str, str]] = {
    "draft": ("draft", "草稿"),
    "submitted": ("requested", "待审核"),
    "received": ("received", "已接收"),
    "accepted": ("accepted", "已同意"),
    "declined": ("rejected", "已拒绝"),
    "on-hold": ("on-hold", "暂停"),
    "scheduled": ("ready", "已预约"),
    "cancelled": ("cancelled", "已取消"),
    "arrived": ("in-progress", "已到诊"),
    "unattended": ("failed", "逾期未到诊"),
    "completed": ("completed", "已完成"),
    "returned": ("completed", "已回转"),
    "entered-in-error": ("entered-in-error", "录入错误"),
}

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("submitted", "cancelled"),
    "submitted": ("received", "accepted", "declined", "cancelled"),
    "received": ("accepted", "declined", "cancelled"),
    "accepted": ("scheduled", "on-hold", "cancelled"),
    "on-hold": ("accepted", "cancelled"),
    "scheduled": ("arrived", "unattended", "cancelled"),
    "arrived": ("completed", "returned"),
    "declined": (),
    "cancelled": (),
    "unattended": (),
    "completed": (),
    "returned": (),
    "entered-in-error": (),
}
INITIAL = ("submitted", "draft")


def business_status(task: dict[str, Any] | None) -> str | None:
    """The referral business status code of `task`; None if it is not a referral Task."""
    if not isinstance(task, dict):
        return None
    concept = task.get("businessStatus")
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding", []):
        if isinstance(coding, dict) and coding.get("system") == SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else ""
    return None


def allowed_next(state: str) -> tuple[str, ...]:
    """The states `state` may move to (besides itself)."""
    return (*TRANSITIONS.get(state, ()), *(("entered-in-error",)
                                           if state != "entered-in-error" else ()))


def _names(states: tuple[str, ...] | list[str]) -> str:
    return ", ".join(states) if states else "none (it is final)"


def _check_shape(task: dict[str, Any], state: str) -> None:
    if state not in STATUS:
        raise error(422, "business-rule", f"Unknown referral business status {state!r}: "
                    f"the codes of {SYSTEM} are {', '.join(STATUS)}",
                    expression="Task.businessStatus")
    expected = STATUS[state][0]
    if task.get("status") != expected:
        raise error(422, "business-rule", f"A referral Task in business status {state!r} must "
                    f"have status {expected!r}, not {task.get('status')!r}",
                    expression="Task.status")
    if not _focus_is_service_request(task.get("focus")):
        raise error(422, "business-rule", "A referral Task's focus must reference the referral "
                    "ServiceRequest", expression="Task.focus")


def _focus_is_service_request(focus: Any) -> bool:
    if not isinstance(focus, dict) or not isinstance(focus.get("reference"), str):
        return False
    reference: str = focus["reference"]
    if reference.startswith("ServiceRequest/") or "/ServiceRequest/" in reference:
        return True
    # an entry of a Bundle not yet resolved
    return reference.startswith("urn:uuid:") and focus.get("type") in (None, "ServiceRequest")


def _migrated(task: dict[str, Any]) -> bool:
    tags = (task.get("meta") or {}).get("tag") or []
    return any(isinstance(t, dict) and t.get("system") == MIGRATED["system"]
               and t.get("code") == MIGRATED["code"] for t in tags)


def check_create(task: dict[str, Any], method: str = "POST") -> None:
    """Refuse a new referral Task that does not start the workflow (unless copied in)."""
    state = business_status(task)
    if state is None:
        return
    _check_shape(task, state)
    if state not in INITIAL and method != "PUT" and not _migrated(task):
        raise error(422, "business-rule", f"A referral Task starts in business status "
                    f"{_names(list(INITIAL))}, not {state!r} (records migrated with the "
                    f"referral under way carry the meta.tag {MIGRATED['system']}|"
                    f"{MIGRATED['code']})", expression="Task.businessStatus")


def check_update(previous: dict[str, Any] | None, task: dict[str, Any], method: str = "POST"
                 ) -> None:
    """Refuse a version of a Task that breaks the referral workflow from `previous` (None:
    `task` is a first version, written by `method`)."""
    before = business_status(previous)
    after = business_status(task)
    if before is None:
        check_create(task, method if previous is None else "update")
        return
    if after is None:
        raise error(422, "business-rule", f"This is a referral Task (business status "
                    f"{before!r}): its businessStatus must stay coded in {SYSTEM}; allowed "
                    f"next states: {_names(allowed_next(before))}",
                    expression="Task.businessStatus")
    if after != before and after not in allowed_next(before):
        raise error(422, "business-rule", f"The referral cannot go from {before!r} to {after!r}; "
                    f"allowed next states: {_names(allowed_next(before))}",
                    expression="Task.businessStatus")
    _check_shape(task, after)


# ---- the Task of a new referral --------------------------------------------------------------

DIRECTION = "http://santong.example.org/fhir/CodeSystem/referral-direction"
REFERRAL_NUMBER = "http://santong.example.org/fhir/sid/referral-number"
# Tags the Task the server opened itself, so a client's own Task for the referral replaces it.
AUTOMATIC = {"system": MIGRATED["system"], "code": "automatic"}
_AUTOMATIC_TOKEN = f"{AUTOMATIC['system']}|{AUTOMATIC['code']}"


def direction(service_request: dict[str, Any]) -> str | None:
    """up, down or lateral: the referral direction a ServiceRequest's category codes."""
    for concept in service_request.get("category", []):
        for coding in (concept or {}).get("coding", []) if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == DIRECTION:
                code = coding.get("code")
                return code if isinstance(code, str) else None
    return None


def _tagged_automatic(task: dict[str, Any]) -> bool:
    return AUTOMATIC in ((task.get("meta") or {}).get("tag") or [])


def new_task(service_request: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """The referral Task the server opens for an upward referral (submitted, to `owner`)."""
    task: dict[str, Any] = {
        "resourceType": "Task", "meta": {"tag": [AUTOMATIC]},
        "identifier": [{"system": i["system"], "value": i["value"]}
                       for i in service_request.get("identifier", [])
                       if isinstance(i, dict) and i.get("system") == REFERRAL_NUMBER
                       and isinstance(i.get("value"), str)],
        "status": STATUS["submitted"][0],
        "businessStatus": {"coding": [{"system": SYSTEM, "code": "submitted",
                                       "display": STATUS["submitted"][1]}],
                           "text": STATUS["submitted"][1]},
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill", "display": "Fulfill the focal request"}]},
        "focus": {"reference": f"ServiceRequest/{service_request['id']}"},
        "for": service_request.get("subject"),
        "authoredOn": service_request.get("authoredOn"),
        "requester": service_request.get("requester"),
        "owner": owner,
    }
    return {k: v for k, v in task.items() if v not in (None, [])}


@dataclass
class _Written:
    """What this transaction wrote of referrals (Transaction.memo), so that a Bundle of many
    referrals needs no search per referral, each of which would flush the queued writes."""

    created: set[str] = field(default_factory=set)  # ServiceRequests POSTed: fresh ids
    focused: set[str] = field(default_factory=set)  # ServiceRequests a Task written focuses on
    automatic: dict[str, str] = field(default_factory=dict)  # ServiceRequest -> Task opened


def _written(tx: Transaction) -> _Written:
    return tx.memo.setdefault("referrals", _Written())  # type: ignore[no-any-return]


def note_task(tx: Transaction, task: dict[str, Any]) -> None:
    focus = community.local_id(task.get("focus"), "ServiceRequest")
    if focus is not None:
        _written(tx).focused.add(focus)


async def open_task(tx: Transaction, service_request: dict[str, Any]) -> None:
    """Creating an upward referral to a member of the medical community opens its Task,
    unless one already focuses on it (a client sent its own first in a Bundle)."""
    from santong.fhir.storing import create_version_1, new_id  # storing calls this module

    written = _written(tx)
    # A POST draws a fresh id: only this transaction's Tasks can point at it yet.
    written.created.add(service_request["id"])
    if direction(service_request) != "up" or service_request.get("status") not in (
            "active", None):
        return
    owner = next((p for p in service_request.get("performer", [])
                  if community.local_id(p, "Organization")), None)
    if owner is None or not await community.is_member(
            tx, community.local_id(owner, "Organization") or ""):
        return
    if service_request["id"] in written.focused:
        return
    task = new_task(service_request, {k: v for k, v in owner.items()
                                      if k in ("reference", "display")})
    task.setdefault("authoredOn", instant(now()))
    task_id = new_id()
    written.automatic[service_request["id"]] = task_id
    await create_version_1(tx, task, task_id, "POST", fresh=True)  # queued with the rest


async def supersede_automatic_task(tx: Transaction, task: dict[str, Any]) -> None:
    """A client's own Task for a referral replaces the one the server opened for it, while
    that one is untouched (version 1, submitted)."""
    from santong.fhir.storing import write_next

    focus = community.local_id(task.get("focus"), "ServiceRequest")
    if focus is None or _tagged_automatic(task):
        return
    written = _written(tx)
    candidates = [written.automatic[focus]] if focus in written.automatic else []
    if focus not in written.created:
        # Opened by an earlier transaction: committed, so no flush is needed to find it
        # (changes made to it here are seen when its row is read below).
        candidates += [other["id"] for other in await community.search(
            tx, "Task", [("focus", f"ServiceRequest/{focus}"), ("_tag", _AUTOMATIC_TOKEN)],
            queued=False)]
    for other_id in dict.fromkeys(candidates):
        if other_id == task.get("id") or tx.unqueue("Task", other_id):
            continue  # opened in this transaction and not written yet: it never was
        current = await tx.read_current("Task", other_id, for_update=True)
        if current is None or current.version_id != 1 or current.deleted or not current.content:
            continue
        other = orjson.loads(current.content)
        if _tagged_automatic(other) and business_status(other) == "submitted":
            await write_next(tx, current, None, "DELETE")
