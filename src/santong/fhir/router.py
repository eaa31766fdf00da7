"""The FHIR router: (method, path) → interaction, in one transaction, as a FhirResponse.

http://hl7.org/fhir/R4/http.html#summary lists the URL patterns. `dispatch` raises FhirError
so a caller holding a wider transaction (a transaction Bundle) can roll it back; `handle` is
the entry point for a single REST call and always answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import asyncpg
from sqlalchemy import exc as sa_exc

from santong import definitions
from santong.fhir import operations
from santong.fhir.call import Call
from santong.fhir.entries import read_bundle
from santong.fhir.formats import response_media_type
from santong.fhir.interactions.batch import batch
from santong.fhir.interactions.capabilities import capabilities
from santong.fhir.interactions.create import create
from santong.fhir.interactions.delete import conditional_delete, delete
from santong.fhir.interactions.history import history
from santong.fhir.interactions.patch import conditional_patch, patch
from santong.fhir.interactions.read import read
from santong.fhir.interactions.search_type import (
    search_compartment,
    search_system,
    search_type,
)
from santong.fhir.interactions.transaction import transaction
from santong.fhir.interactions.update import conditional_update, update
from santong.fhir.interactions.vread import vread
from santong.fhir.outcome import FhirError, Issue, error, operation_outcome
from santong.fhir.request import FhirRequest, FhirResponse
from santong.search import parameters as search_parameters
from santong.search.registry import CustomParameters
from santong.settings import Settings
from santong.storage.repository import DuplicateId, Repository, Transaction
from santong.validation import registry as profile_registry

log = logging.getLogger(__name__)

Handler = Callable[[Call], Awaitable[FhirResponse]]
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# Route shapes: "T" a resource type, "I" an id, "V" a version id; other segments are literal
# (`metadata`, `_history`, `_search`, and `$name` operations, from fhir/operations.py).
_ROUTES: dict[tuple[str, ...], dict[str, Handler]] = {
    (): {"GET": search_system},
    ("metadata",): {"GET": capabilities},
    ("_history",): {"GET": history},
    ("T",): {"GET": search_type, "POST": create, "PUT": conditional_update,
             "DELETE": conditional_delete, "PATCH": conditional_patch},
    ("T", "_search"): {"POST": search_type},
    ("T", "_history"): {"GET": history},
    ("T", "I"): {"GET": read, "PUT": update, "DELETE": delete, "PATCH": patch},
    ("T", "I", "_history"): {"GET": history},
    ("T", "I", "I"): {"GET": search_compartment},
    ("T", "I", "_history", "V"): {"GET": vread},
    **operations.routes(),
}
# A transaction Bundle that deadlocks with another or loses a serialisation race is run this
# many times in all (Router._bundle) before its client gets the 409: conditional creates and
# updates lock their criteria, and two Bundles of the same patients may meet on them in
# different orders.
_TRANSACTION_ATTEMPTS = 3

_LITERALS = frozenset({"metadata", "_history", "_search"})


def _literal(segment: str) -> bool:
    # Ids are [A-Za-z0-9-.] and types start with a capital: neither can look like these.
    return segment in _LITERALS or segment.startswith("$")


def _shape(segments: list[str]) -> tuple[str, ...]:
    return tuple(segment if position < 3 and _literal(segment)
                 else "TIIV"[position] if position < 4 else "?"
                 for position, segment in enumerate(segments))


class Router:
    def __init__(self, repository: Repository, settings: Settings,
                 custom_parameters: CustomParameters | None = None,
                 profiles: profile_registry.ProfileRegistry | None = None) -> None:
        self.repository = repository
        self.settings = settings
        self.custom_parameters = custom_parameters
        self.profiles = profiles

    def route(self, request: FhirRequest) -> tuple[Handler, list[str]]:
        segments = [s for s in request.path.split("/") if s]
        methods = _ROUTES.get(_shape(segments))
        if methods is None:
            if segments and segments[-1].startswith("$"):
                raise error(400, "not-supported", f"Operation {segments[-1]} is not supported")
            raise error(404, "not-found", f"No FHIR interaction at '{request.path}'")
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            raise error(405, "not-supported",
                        f"{request.method} is not allowed on '{request.path or '/'}'",
                        headers={"Allow": ", ".join(allowed)})
        if segments and not _literal(segments[0]):
            if not definitions.is_resource_type(segments[0]):
                raise error(404, "not-supported", f"Unknown resource type {segments[0]!r}")
            operation = operations.OPERATIONS.get(segments[-1])
            if operation is not None and not operation.defined_on(segments[0]):
                defined = ", ".join(sorted(operation.definitions))
                raise error(400, "not-supported", f"Operation {segments[-1]} is not defined on "
                            f"{segments[0]} (only on {defined})")
            if len(segments) > 1 and not _literal(segments[1]) and not _ID.match(segments[1]):
                raise error(400, "invalid", f"Invalid resource id {segments[1]!r}: ids are "
                                "1-64 characters of A-Z, a-z, 0-9, '-' and '.'")
        return handler, segments

    async def dispatch(self, request: FhirRequest, tx: Transaction | None = None) -> FhirResponse:
        """Run one interaction; in `tx` if given, else in a transaction of its own."""
        if request.method == "POST" and not request.path.strip("/"):
            # batch/transaction: the Bundle decides how entries share database transactions.
            if tx is not None:
                raise error(400, "not-supported", "Bundles cannot be nested")
            return await self._bundle(request)
        handler, segments = self.route(request)
        if self.custom_parameters is not None and self._may_need_new_parameters(segments,
                                                                                request):
            await self.custom_parameters.sync()
        call = Call(request, tx, self.settings)  # type: ignore[arg-type]
        if self.profiles is not None:
            profile_registry.activate(self.profiles)
        if segments and not _literal(segments[0]):
            call.resource_type = segments[0]
            if len(segments) > 1 and not _literal(segments[1]):
                call.id = segments[1]
            if len(segments) == 4:
                call.version_id = segments[3]
            elif len(segments) == 3 and not _literal(segments[2]):
                call.member_type = segments[2]
        # Profiles, ValueSets and CodeSystems changed: every process reloads at commit.
        announce = (call.resource_type in profile_registry.WATCHED_TYPES
                    and request.method not in ("GET", "HEAD") and segments[-1][:1] != "$")
        if tx is not None:
            if announce:
                await profile_registry.announce(tx.connection)
            return await handler(call)
        # GET and HEAD only read (search-type POST _search too, but it is rare enough).
        opened = (self.repository.reading() if request.method in ("GET", "HEAD")
                  else self.repository.transaction())
        async with opened as own:
            call.tx = own
            if announce:
                await profile_registry.announce(own.connection)
            return await handler(call)

    async def _bundle(self, request: FhirRequest) -> FhirResponse:
        """A batch or transaction Bundle. A transaction that loses a race (deadlock,
        serialisation failure) was rolled back whole, nothing of it written: it runs again as
        if just received, up to _TRANSACTION_ATTEMPTS in all, each time a little later and at
        a random moment, so that the transaction it met is likely done."""
        attempt = 1
        while True:
            # Read afresh each time: processing fills in the entries (ids, references).
            bundle_type, entries = read_bundle(request, self.settings.max_bundle_entries)
            if bundle_type != "transaction":
                return await batch(self, request, entries)
            try:
                return await transaction(self, request, entries)
            except Exception as exc:
                if attempt == _TRANSACTION_ATTEMPTS or not is_conflict(exc):
                    raise
                log.info("transaction Bundle lost a race (%s); attempt %d of %d",
                         type(exc).__name__, attempt + 1, _TRANSACTION_ATTEMPTS)
            await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
            attempt += 1

    @staticmethod
    def _may_need_new_parameters(segments: list[str], request: FhirRequest) -> bool:
        """Whether the request names a search parameter this process does not know, or is a
        $reindex. Another process may have stored that SearchParameter a moment ago and its
        NOTIFY not have arrived yet: a version check (one query, rare) makes sure."""
        if segments and segments[-1] == "$reindex":
            return True
        if not segments or _literal(segments[0]):
            return False
        names = [key for key, _ in request.query]
        if len(segments) == 1:  # search, conditional update/delete/patch
            resource_type = segments[0]
        elif segments[1:] == ["_search"] and request.method == "POST":  # the form's too
            resource_type = segments[0]
            body = (request.body or b"").decode("utf-8", errors="replace")
            names += [key for key, _ in parse_qsl(body, keep_blank_values=True)]
        elif len(segments) == 3 and not _literal(segments[2]):  # compartment search
            resource_type = segments[2]
        else:
            return False
        return any(search_parameters.get(resource_type, key.split(":")[0].split(".")[0])
                   is None for key in names if not key.startswith("_"))

    async def handle(self, request: FhirRequest) -> FhirResponse:
        """Answer a single REST call, turning every failure into an OperationOutcome."""
        try:
            response_media_type(request)
            _check_text(request)
            response = await self.dispatch(request)
            if (self.custom_parameters is not None and request.method != "GET"
                    and request.path.startswith("SearchParameter")):
                # This process indexes with the new parameter from its very next write.
                await self.custom_parameters.sync()
            if (self.profiles is not None and request.method != "GET" and (
                    request.path.split("/")[0] in profile_registry.WATCHED_TYPES
                    or not request.path.strip("/"))):
                await self.profiles.sync()  # this process validates with it from now on
            return response
        except FhirError as exc:
            return FhirResponse(exc.status, resource=exc.outcome(), headers=dict(exc.headers))
        except Exception as exc:
            return self.failure_response(exc, request)

    def failure_response(self, exc: Exception, request: FhirRequest) -> FhirResponse:
        """The answer to an unexpected failure: 503, 409 or a bare 500 (details only logged)."""
        if is_database_unavailable(exc):
            log.warning("database unavailable: %s", exc)
            return FhirResponse(
                503,
                resource=operation_outcome([Issue(
                    "transient", "The database is unavailable; try again shortly")]),
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        if is_conflict(exc):
            return FhirResponse(409, resource=operation_outcome([Issue(
                "conflict", "A concurrent change conflicted with this one; retry it")]))
        log.exception("unexpected error in %s %s", request.method, request.path)
        return FhirResponse(500, resource=operation_outcome([Issue(
            "exception", f"Internal server error (request {request.context.request_id})")]))


def _check_text(request: FhirRequest) -> None:
    """PostgreSQL text cannot hold NUL: refuse it in the path and parameters up front."""
    if "\x00" in request.path:
        raise error(400, "invalid", "The URL contains a NUL character")
    for key, value in request.query:
        if "\x00" in key or "\x00" in value:
            raise error(400, "invalid", f"Parameter {key!r} contains a NUL character",
                        expression=key.replace("\x00", ""))


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_database_unavailable(exc: BaseException) -> bool:
    for cause in _causes(exc):
        if isinstance(cause, (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                              asyncpg.CannotConnectNowError,
                              asyncpg.ConnectionDoesNotExistError)):
            return True
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):
            return True  # the server closed the connection between our statements
        if isinstance(cause, asyncpg.InternalClientError):
            # The server went away in the middle of the connection's protocol exchange
            # ("cannot switch to state …"): that connection is discarded, the next one works.
            return True
        if isinstance(cause, sa_exc.TimeoutError):  # the connection pool is exhausted
            return True
    return False


def is_conflict(exc: BaseException) -> bool:
    # DuplicateId: a server-drawn uuid was taken after all; a retry draws another.
    return any(
        isinstance(c, (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, DuplicateId))
        for c in _causes(exc)
    )
