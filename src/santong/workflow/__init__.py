"""Workflows the server enforces on writes (http://hl7.org/fhir/R4/workflow.html).

`referral`: the business-status state machine of referral Tasks (双向转诊, the service
connection), and the Task an upward referral to a member organization opens; `access`: the
record access an accepted referral grants under the patient's sharing Consent; `community`:
membership of the medical community. `fhir/storing.py` calls `check_write` before every
version it writes and `after_write` after it (`after_delete` for a deletion), in the same
transaction.
"""

from __future__ import annotations

from typing import Any

from santong.storage.repository import Transaction
from santong.workflow import access, referral


def check_write(resource_type: str, previous: dict[str, Any] | None,
                resource: dict[str, Any], method: str) -> None:
    """Raise a FhirError if `resource` (the next version after `previous`, or the first one
    when `previous` is None), written by `method`, breaks a workflow this server enforces."""
    if resource_type == "Task":
        referral.check_update(previous, resource, method)


async def after_write(tx: Transaction, stored: dict[str, Any], previous: dict[str, Any] | None,
                      method: str, *, first: bool = True) -> None:
    """What a version being written (`stored`, with its id) by `method` sets off in the same
    transaction. `first`: it starts the resource (or re-creates a deleted one); `previous`:
    the version before, for Tasks (None when `first`)."""
    resource_type = stored["resourceType"]
    # A referral made here (POST) opens its Task; records copied in by PUT come with theirs.
    if resource_type == "ServiceRequest" and first and method == "POST":
        await referral.open_task(tx, stored)
    elif resource_type == "Task":
        referral.note_task(tx, stored)
        before, after = referral.business_status(previous), referral.business_status(stored)
        if after is None:
            return
        if previous is None:
            await referral.supersede_automatic_task(tx, stored)
        if after != before:
            await access.on_referral_state(tx, stored, before, after)


async def after_delete(tx: Transaction, resource_type: str, id: str) -> None:
    """What deleting a resource sets off in the same transaction: a deleted referral Task no
    longer grants the record access its acceptance recorded."""
    if resource_type == "Task":
        await access.revoke(tx, id)
