"""Record access that referrals grant (信息互通 under the patient's consent).

When a referral Task is accepted, the receiving organization (its `owner`) may see the referred
patient's record — the Patient and their Encounters, Conditions and CarePlans — provided the
patient has an active sharing Consent covering it: scope `patient-privacy`, a `permit`
provision in force now whose actors name the receiving organization, an organization it is
part of, or the medical community it belongs to (:mod:`santong.workflow.community`). The grant
is recorded in `referral_access` (migration 0003) in the Task's own transaction; a Task called
off (cancelled, declined, entered-in-error) or deleted revokes it, and a grant whose Consent is
no longer active gives nothing.

Enforcement waits for authorization (SMART on FHIR): :func:`shared_with` builds the SQL that
the future authorization layer returns from `RequestContext.search_filter` for a caller acting
for an organization, ORed with what it may see otherwise. Until then every caller sees
everything and grants are only recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from santong.fhir.datetimes import parse_range
from santong.storage.repository import Transaction
from santong.workflow import community

SHARING_SCOPE = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")
# The types a grant makes visible, with the reference parameter that names their patient.
SHARED_TYPES: dict[str, str | None] = {
    "Patient": None, "Encounter": "subject", "Condition": "subject", "CarePlan": "subject",
}
REVOKING_STATES = frozenset({"cancelled", "declined", "entered-in-error"})

_GRANT = text(
    "INSERT INTO referral_access (task_id, organization_id, patient_id, consent_id, granted_at)"
    " VALUES (:task, :organization, :patient, :consent, :now)"
    " ON CONFLICT (task_id) DO UPDATE SET organization_id = excluded.organization_id,"
    " patient_id = excluded.patient_id, consent_id = excluded.consent_id,"
    " granted_at = excluded.granted_at, revoked_at = NULL"
)
_REVOKE = text(
    "UPDATE referral_access SET revoked_at = :now WHERE task_id = :task AND revoked_at IS NULL"
)
_GRANTS = text(
    "SELECT task_id, organization_id, patient_id, consent_id, granted_at, revoked_at"
    " FROM referral_access WHERE organization_id = :organization ORDER BY granted_at"
)
# Patients an organization may see now: grants not revoked, under a Consent still active.
_GRANTED_PATIENTS = (
    "SELECT g.patient_id FROM referral_access g JOIN resource c"
    " ON c.resource_type = 'Consent' AND c.id = g.consent_id AND NOT c.deleted"
    " WHERE g.organization_id = :referral_organization AND g.revoked_at IS NULL"
    " AND CAST(c.content AS jsonb) ->> 'status' = 'active'"
)


@dataclass(frozen=True, slots=True)
class Grant:
    task_id: str
    organization_id: str
    patient_id: str
    consent_id: str
    granted_at: datetime
    revoked_at: datetime | None


def _in_force(period: Any, now: datetime) -> bool:
    if not isinstance(period, dict):
        return True
    try:
        starts = parse_range(period["start"])[0] if period.get("start") else None
        ends = parse_range(period["end"])[1] if period.get("end") else None
    except (ValueError, OverflowError):
        return False
    return (starts is None or starts <= now) and (ends is None or now < ends)


def covers(consent: dict[str, Any], organizations: set[str], now: datetime) -> bool:
    """Whether a sharing Consent lets any of `organizations` see the patient's record now."""
    scope = [(c.get("system"), c.get("code")) for c in
             (consent.get("scope") or {}).get("coding", []) if isinstance(c, dict)]
    provision = consent.get("provision")
    if (consent.get("status") != "active" or SHARING_SCOPE not in scope
            or not isinstance(provision, dict) or provision.get("type", "permit") != "permit"
            or not _in_force(provision.get("period"), now)):
        return False
    return any(community.local_id(actor.get("reference"), "Organization") in organizations
               for actor in provision.get("actor", []) if isinstance(actor, dict))


async def sharing_consent(tx: Transaction, patient_id: str, organization_id: str
                          ) -> dict[str, Any] | None:
    """The patient's active sharing Consent covering the organization, if any."""
    organizations = await community.belongs_to(tx, organization_id)
    now = datetime.now(UTC)
    # The patient's Consents, a page at a time until one covers (a patient may hold many, and
    # the covering one may come late in id order). Only the patient is searched: the other
    # criteria (scope, actor) match thousands of Consents each, which PostgreSQL's statistics
    # do not tell, and a plan starting from one of them walks them all.
    criteria = [("patient", f"Patient/{patient_id}")]
    async for consent in community.every_match(tx, "Consent", criteria):
        if covers(consent, organizations, now):
            return consent
    return None


async def receiving_organization(tx: Transaction, task: dict[str, Any]) -> str | None:
    """The Task's owner as an Organization id (a PractitionerRole owner: its organization)."""
    owner = task.get("owner")
    found = community.local_id(owner, "Organization")
    role_id = community.local_id(owner, "PractitionerRole")
    if found is None and role_id is not None:
        role = await community.read(tx, "PractitionerRole", role_id)
        found = community.local_id((role or {}).get("organization"), "Organization")
    return found


async def on_referral_state(tx: Transaction, task: dict[str, Any], before: str | None,
                            after: str) -> None:
    """Record or revoke the access a referral Task's move from `before` to `after` grants."""
    now = datetime.now(UTC)
    if after in REVOKING_STATES:
        await revoke(tx, task["id"])
        return
    if after != "accepted" or before == "accepted":
        return
    patient = community.local_id(task.get("for"), "Patient")
    organization = await receiving_organization(tx, task)
    if patient is None or organization is None:
        return
    consent = await sharing_consent(tx, patient, organization)
    if consent is None:
        return  # no consent, no sharing: the referral goes on without it
    # referral_access is written at once, never queued: no need to flush the queued writes.
    await tx.run(_GRANT, {
        "task": task["id"], "organization": organization, "patient": patient,
        "consent": consent["id"], "now": now})


async def revoke(tx: Transaction, task_id: str) -> None:
    """End the access a referral Task granted (if it granted any and it is not ended yet)."""
    await tx.run(_REVOKE, {"task": task_id, "now": datetime.now(UTC)})


async def grants(tx: Transaction, organization_id: str) -> list[Grant]:
    """Every grant recorded for an organization, revoked ones included."""
    rows = await tx.run(_GRANTS, {"organization": organization_id})
    return [Grant(*row) for row in rows]


def shared_with(organization_id: str, resource_type: str) -> tuple[str, dict[str, Any]] | None:
    """SQL over the resource row `r` selecting what referrals let `organization_id` see of
    `resource_type` (the shape of `RequestContext.search_filter`); None for types a referral
    shares nothing of."""
    if resource_type not in SHARED_TYPES:
        return None
    binds = {"referral_organization": organization_id}
    code = SHARED_TYPES[resource_type]
    if code is None:
        return f"r.id IN ({_GRANTED_PATIENTS})", binds
    return (f"EXISTS (SELECT 1 FROM search_reference s WHERE s.rid = r.rid"
            f" AND s.resource_type = r.resource_type AND s.code = '{code}'"
            f" AND s.target_type = 'Patient' AND s.target_id IN ({_GRANTED_PATIENTS}))", binds)
