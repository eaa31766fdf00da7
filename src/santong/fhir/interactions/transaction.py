"""transaction — http://hl7.org/fhir/R4/http.html#transaction (rules: #trules).

POST [base] with a `transaction` Bundle: every entry in one database transaction, all or
nothing. Before anything is written, each entry's identity is settled: POST entries get their
new id (or, with `ifNoneExist`, the single existing match; when none exists yet, under the
criteria's advisory lock so concurrent transactions create one resource), conditional PUTs
their target. Then every reference in every resource is rewritten to those ids (fullUrls
`urn:uuid:`, `urn:oid:`, relative and absolute URLs; also in extensions and contained
resources) and conditional references (`Patient?identifier=…`) are resolved to their single
match. Entries then run in
the spec's order (DELETE, POST, PUT/PATCH, GET/HEAD) through `Router.dispatch`, the same
interactions as single calls; an entry whose conditional reference matched nothing runs last
in its turn and searches again, so it also finds what the Bundle's other entries created. The
answer lists entries in request order. A failing entry rolls everything back and is reported
as one OperationOutcome naming it (`Bundle.entry[n]`).

POST entries are dispatched as update-as-create of the id assigned here (`PUT [type]/[id]`
with `If-None-Match: *`) because the create interaction always draws its own id.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from santong.fhir.call import Call
from santong.fhir.entries import (
    Entry,
    criteria_key,
    failed_entry,
    parse_entry,
    resolve_all_conditional,
    response_entry,
)
from santong.fhir.interactions.conditional import (
    lock_all_criteria,
    match_or_lock,
    prefetch_matches,
    select_single,
    single,
)
from santong.fhir.outcome import FhirError, error
from santong.fhir.representation import write_result
from santong.fhir.request import FhirRequest, FhirResponse
from santong.fhir.storing import new_id
from santong.fhir.versioning import instant, now
from santong.search.criteria import parse_conditional
from santong.storage.repository import StoredVersion

if TYPE_CHECKING:
    from santong.fhir.router import Router


class _Plan:
    """What the identity phase decided, entry by entry."""

    def __init__(self) -> None:
        self.identities: dict[str, str] = {}  # fullUrl -> "Type/id"
        self.requests: dict[int, FhirRequest] = {}  # entries dispatched differently than sent
        self.answered: dict[int, FhirResponse] = {}  # conditional creates that matched
        self.same_as: dict[int, int] = {}  # a repeated ifNoneExist -> the first such entry
        self.criteria: dict[str, str] = {}  # criteria key -> "Type/id" decided in this Bundle
        self.targets: dict[str, int] = {}  # "Type/id" written -> the entry writing it
        # ifNoneExist criteria key -> their matches, searched for all at once beforehand
        self.prefetched: dict[str, list[StoredVersion] | None] = {}
        # ifNoneExist criteria keys that match nothing, confirmed under their locks
        self.locked: set[str] = set()


async def _settle_post(call: Call, outer: FhirRequest, entry: Entry, plan: _Plan) -> str:
    resource_type = entry.resource_type
    if_none_exist = entry.headers.get("if-none-exist")
    if if_none_exist:
        params = parse_conditional(if_none_exist)
        key = criteria_key(resource_type, params)
        if key in plan.criteria:
            plan.same_as[entry.index] = plan.targets[plan.criteria[key]]
            return plan.criteria[key]
        call.resource_type = resource_type
        purpose = "a conditional create (ifNoneExist)"
        matches = plan.prefetched.get(key)
        # Matched beforehand: committed, no lock needed. None matched: confirmed under the lock
        # (beforehand too, when _prefetch could).
        existing = (None if key in plan.locked else single(matches, purpose) if matches
                    else await select_single(call, params, purpose,
                                             unmatched=matches is not None))
        if existing is not None:
            plan.answered[entry.index] = write_result(
                entry.request(outer), existing, 200, "Resource already exists")
            plan.criteria[key] = f"{resource_type}/{existing.id}"
            return plan.criteria[key]
    id = new_id()
    request = entry.request(outer)
    # Settled here: the create writes under this id, without matching its criteria again.
    request.assigned_id = id
    request.headers = {k: v for k, v in request.headers.items() if k != "if-none-exist"}
    plan.requests[entry.index] = request
    if if_none_exist:
        plan.criteria[criteria_key(resource_type, parse_conditional(if_none_exist))] = (
            f"{resource_type}/{id}")
    return f"{resource_type}/{id}"


async def _settle_conditional_put(call: Call, entry: Entry, plan: _Plan) -> str | None:
    """Predict a conditional update's target (its criteria locked until commit when
    nothing matches yet)."""
    call.resource_type = entry.resource_type
    found = await match_or_lock(call, entry.query)
    if len(found) > 1:
        return None  # the update itself answers 412
    # No match creates: give the new resource its id now so references can point at it.
    target = found[0].id if found else entry.resource.setdefault("id", new_id())
    identity = f"{entry.resource_type}/{target}"
    plan.criteria[criteria_key(entry.resource_type, entry.query)] = identity
    return identity


def _claim(plan: _Plan, entry: Entry, target: str) -> None:
    """Two entries may not change the same resource (http.html#trules)."""
    other = plan.targets.get(target)
    if other is not None and other != entry.index:
        raise error(400, "invalid", f"{target} is also changed by Bundle.entry[{other}]: "
                    "a transaction may change each resource once")
    plan.targets[target] = entry.index


async def _prefetch(call: Call, entries: list[Entry], plan: _Plan) -> None:
    """The matches of the Bundle's conditional creates, by criteria key, in one statement
    (a Bundle of a patient's record holds a dozen; one round trip each took ~3 ms a Bundle),
    into `plan.prefetched`. Criteria that do not parse are left to their entry, which
    reports them. Those that match nothing are then locked and searched again, all at once
    (`plan.locked`: still nothing), instead of a lock and a search each."""
    criteria: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for entry in entries:
        if_none_exist = entry.headers.get("if-none-exist")
        if entry.method == "POST" and if_none_exist:
            try:
                params = parse_conditional(if_none_exist)
            except FhirError:
                continue
            criteria.setdefault(criteria_key(entry.resource_type, params),
                                (entry.resource_type, params))
    if len(criteria) < 2:
        return  # one is as quick on its own
    plan.prefetched = dict(zip(criteria, await prefetch_matches(call, list(criteria.values())),
                               strict=True))
    # Locked in the order the entries would lock them one by one (lock_order: by criteria
    # key), so that two transactions never wait on each other; only when no criteria is left
    # to its entry, which would lock it out of that order.
    unmatched = sorted(key for key, matches in plan.prefetched.items() if matches == [])
    if not unmatched or any(matches is None for matches in plan.prefetched.values()):
        return
    await lock_all_criteria(call, [criteria[key] for key in unmatched])
    again = await prefetch_matches(call, [criteria[key] for key in unmatched])
    for key, matches in zip(unmatched, again, strict=True):
        if matches is not None:  # None: not searched again, left to the entry
            plan.prefetched[key] = matches
            if not matches:
                plan.locked.add(key)


async def _settle_identities(call: Call, outer: FhirRequest, entries: list[Entry]) -> _Plan:
    plan = _Plan()
    await _prefetch(call, entries, plan)
    # Conditional creates lock their criteria in one global order so two transactions never
    # wait on each other's locks.
    def lock_order(entry: Entry) -> tuple[int, str, int]:
        criteria = entry.headers.get("if-none-exist")
        if entry.method == "POST" and criteria:
            return 0, criteria_key(entry.resource_type, parse_conditional(criteria)), entry.index
        return 1, "", entry.index

    for entry in sorted(entries, key=lock_order):
        try:
            target: str | None = None
            if entry.method == "POST":
                target = await _settle_post(call, outer, entry, plan)
            elif entry.method == "PUT" and "/" not in entry.path:
                target = await _settle_conditional_put(call, entry, plan)
            elif entry.method in ("PUT", "PATCH", "DELETE") and "/" in entry.path:
                target = "/".join(entry.path.split("/")[:2])
            if target is None:
                continue
            if entry.index not in plan.same_as:
                _claim(plan, entry, target)
            if entry.full_url and entry.method in ("POST", "PUT"):
                plan.identities[entry.full_url] = target
        except FhirError as exc:
            raise failed_entry(entry, exc) from None
    return plan


def response_bundle(bundle_type: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now())},
        "type": bundle_type,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


# Entries dispatched between two yields to the event loop. New resources are queued and
# written at the end, so dispatching them awaits nothing that suspends: a Bundle of 10,000
# Observations held its process's loop for 2.8 s at a stretch, every other request on that
# process waiting (and the supervisor's health check with them).
_ENTRIES_PER_TURN = 100


async def transaction(router: Router, request: FhirRequest, raw: list[Any]) -> FhirResponse:
    entries = [parse_entry(index, item, request.base_url) for index, item in enumerate(raw)]
    for entry in entries:
        if entry.problem is not None:
            raise failed_entry(entry, entry.problem)
    async with router.repository.transaction() as tx:
        call = Call(request, tx, router.settings)
        plan = await _settle_identities(call, request, entries)
        waiting: set[int] = set()  # conditional references that match nothing written yet
        for entry in entries:
            try:
                if not await resolve_all_conditional(call, entry, plan.identities,
                                                     plan.criteria, missing_ok=True):
                    waiting.add(entry.index)
            except FhirError as exc:
                raise failed_entry(entry, exc) from None
        responses = dict(plan.answered)
        # Within its method's turn an entry that waits goes after the others, so that its
        # conditional references also see what they create (e.g. a Patient POSTed without
        # ifNoneExist), then resolves them again: the search sees this transaction's writes.
        ordered = sorted(entries, key=lambda e: (e.order[0], e.index in waiting, e.index))
        for turn, entry in enumerate(ordered):
            if turn % _ENTRIES_PER_TURN == _ENTRIES_PER_TURN - 1:
                await asyncio.sleep(0)  # let the process's other requests go on (_ENTRIES_PER_TURN)
            if entry.index in responses or entry.index in plan.same_as:
                continue
            entry_request = plan.requests.get(entry.index) or entry.request(request)
            try:
                if entry.index in waiting:
                    await resolve_all_conditional(call, entry, plan.identities, plan.criteria)
                    entry_request.resource = entry.resource
                responses[entry.index] = await router.dispatch(entry_request, tx)
            except FhirError as exc:
                raise failed_entry(entry, exc) from None
        for index, first in plan.same_as.items():
            # A repeated conditional create finds what the first one created.
            done = responses[first]
            responses[index] = FhirResponse(200, done.resource, done.body, dict(done.headers),
                                             done.last_modified)
    answers = [response_entry(responses[entry.index], entry.method) for entry in entries]
    return FhirResponse(200, resource=response_bundle("transaction-response", answers))
