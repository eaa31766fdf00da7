"""The medical community (医共体) as the stored resources describe it: which organizations
belong to it, and what an organization is part of. Read inside the write's transaction.

An organization is a *member* when an active OrganizationAffiliation names it (or an
organization it is part of: a hospital's department) as `organization` or
`participatingOrganization`. What it *belongs to* is itself, its `partOf` ancestors, and the
organizations and networks (the community itself) of those affiliations: a Consent naming any
of them as recipient covers it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from santong.search.query import Compiler
from santong.storage.repository import Transaction

MAX_PART_OF = 5  # departments of departments of a hospital, at most


async def search(tx: Transaction, resource_type: str, params: list[tuple[str, str]],
                 limit: int = 100, *, after: str | None = None, queued: bool = True
                 ) -> list[dict[str, Any]]:
    """Live resources matching search parameters, within the transaction, in id order (after
    the id `after`: the next page). The parameters are the workflow's own, of `resource_type`
    alone (no chains or `_has`): only queued writes of that type need flushing first, and none
    when `queued` is False (the caller knows them)."""
    compiled = Compiler().compile(resource_type, params, strict=True)
    if queued:
        await tx.flush_for(resource_type)
    found = await tx.search_current(resource_type, compiled.conditions, limit, after,
                                    flush=False)
    return [orjson.loads(v.content) for v in found if v.content]


async def every_match(tx: Transaction, resource_type: str, params: list[tuple[str, str]],
                      page: int = 20) -> AsyncIterator[dict[str, Any]]:
    """Every live resource matching the parameters (as `search`), fetched a page at a time:
    a caller that stops early reads no more, and none is cut off by a page size."""
    after: str | None = None
    while found := await search(tx, resource_type, params, page, after=after):
        for resource in found:
            yield resource
        if len(found) < page:
            return
        after = found[-1]["id"]


async def read(tx: Transaction, resource_type: str, id: str) -> dict[str, Any] | None:
    current = await tx.read_current(resource_type, id)
    if current is None or current.deleted or not current.content:
        return None
    return orjson.loads(current.content)  # type: ignore[no-any-return]


def local_id(reference: Any, resource_type: str) -> str | None:
    """The id of a literal reference `resource_type/id` (relative or absolute), else None."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


async def ancestors(tx: Transaction, organization_id: str) -> list[str]:
    """The organization and those it is part of, nearest first."""
    chain = [organization_id]
    while len(chain) <= MAX_PART_OF:
        organization = await read(tx, "Organization", chain[-1])
        parent = local_id((organization or {}).get("partOf"), "Organization")
        if parent is None or parent in chain:
            break
        chain.append(parent)
    return chain


# An affiliation names an organization on either side; `active` absent counts as active.
_SIDES = ("participating-organization", "primary-organization")
_ACTIVE = ("active:not", "false")


async def _affiliation_conditions(tx: Transaction, organization_ids: list[str]
                                  ) -> list[list[tuple[str, dict[str, Any]]]]:
    """SQL conditions selecting the active OrganizationAffiliations naming any of the
    organizations, one per side, after flushing this transaction's queued affiliations."""
    targets = ",".join(f"Organization/{i}" for i in organization_ids)
    await tx.flush_for("OrganizationAffiliation")
    return [Compiler().compile("OrganizationAffiliation", [(side, targets), _ACTIVE],
                               strict=True).conditions for side in _SIDES]


async def is_member(tx: Transaction, organization_id: str) -> bool:
    """Whether an active affiliation names the organization or one it is part of. Asked
    as an existence question: a county hospital may lead hundreds of affiliations."""
    chain = await ancestors(tx, organization_id)
    for conditions in await _affiliation_conditions(tx, chain):
        if await tx.exists_current("OrganizationAffiliation", conditions):
            return True
    return False


async def belongs_to(tx: Transaction, organization_id: str) -> set[str]:
    """Organization ids whose share of a record `organization_id` may see (see module doc):
    its chain and the `organization` and `network` of its active affiliations, read from
    their index rows (a county hospital's many affiliations are not read one by one)."""
    chain = await ancestors(tx, organization_id)
    covered = set(chain)
    for conditions in await _affiliation_conditions(tx, chain):
        covered |= await tx.referenced_ids("OrganizationAffiliation", conditions,
                                           ("primary-organization", "network"), "Organization")
    return covered
