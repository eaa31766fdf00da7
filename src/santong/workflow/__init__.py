"""Workflows the server enforces on writes (http://hl7.org/fhir/R4/workflow.html).

`referral`: the business-status state machine of referral Tasks (双向转诊, the service
connection). `check_write` is the one hook `fhir/storing.py` calls for every version written.
"""

from __future__ import annotations

from typing import Any

from santong.workflow import referral


def check_write(resource_type: str, previous: dict[str, Any] | None,
                resource: dict[str, Any], method: str) -> None:
    """Raise a FhirError if `resource` (the next version after `previous`, or the first one
    when `previous` is None), written by `method`, breaks a workflow this server enforces."""
    if resource_type == "Task":
        referral.check_update(previous, resource, method)
