"""The loaded profiles of one process, kept in step with the database and with every process.

Profiles are StructureDefinitions with a snapshot (:mod:`santong.validation.profiles`), from
the database: stored through the REST API, or by :mod:`santong.packages` at start-up (the
bundled guide). A registry without a database can be given resources in memory instead
(:meth:`ProfileRegistry.load_folder`, for tools and the benchmark); stored ones win on the
same url. The ValueSets their `required`/`extensible` bindings name are expanded in
memory (:mod:`santong.validation.valuesets`) from the same two sources, with the CodeSystems
they draw on.

Like custom SearchParameters (:mod:`santong.search.registry`): a write of a StructureDefinition,
ValueSet or CodeSystem `NOTIFY`s every process (delivered at commit), each reloads, and a poll
of the version counter the write bumps catches anything a lost listener missed. The router
re-syncs its own process right after such a write, so the next request already sees it.

Validation at write time needs no database access: the hook (:func:`validate_write`) reads the
active registry's current :class:`ProfileSet`, an immutable snapshot swapped on reload. The
router makes its registry active per request (a context variable), so several apps in one
process (tests) do not share state.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from santong.packages import read_package
from santong.storage import versions
from santong.storage.database import asyncpg_connect_args
from santong.validation.profiles import (
    Profile,
    ProfileError,
    ProfileSet,
    compile_profile,
    validate_against,
)
from santong.validation.structure import ValidationIssue
from santong.validation.valuesets import Codes, Undecidable, expand

if TYPE_CHECKING:
    from santong.storage.repository import Connection

__all__ = [
    "CHANNEL",
    "WATCHED_TYPES",
    "ProfileRegistry",
    "activate",
    "active",
    "announce",
    "parse_required",
    "validate_write",
]

log = logging.getLogger(__name__)
CHANNEL = "santong_profiles"
WATCHED_TYPES = ("StructureDefinition", "ValueSet", "CodeSystem")
_DEFINITIONS = text(
    "SELECT content FROM resource WHERE resource_type = 'StructureDefinition' AND NOT deleted"
)
_BY_URL = text(
    "SELECT r.content FROM resource r JOIN search_uri u ON u.rid = r.rid"
    " WHERE u.resource_type = :type AND u.code = 'url' AND u.value IN :urls AND NOT r.deleted"
    " ORDER BY r.last_updated"
).bindparams(bindparam("urls", expanding=True))

_active: contextvars.ContextVar[ProfileRegistry | None] = contextvars.ContextVar(
    "santong_profile_registry", default=None)


def activate(registry: ProfileRegistry | None) -> None:
    """Make `registry` the one write-time validation and $validate use in this context."""
    _active.set(registry)


def active() -> ProfileRegistry | None:
    return _active.get()


def parse_required(setting: str | None) -> dict[str, tuple[str, ...]]:
    """`Patient=url,Observation=url2,Patient=url3` → {type: (urls…)}."""
    out: dict[str, list[str]] = {}
    for part in (setting or "").split(","):
        part = part.strip()
        if not part:
            continue
        rtype, sep, url = part.partition("=")
        if not sep or not rtype.strip() or not url.strip():
            raise ValueError(f"SANTONG_REQUIRED_PROFILES: {part!r} is not Type=url")
        out.setdefault(rtype.strip(), []).append(url.strip())
    return {k: tuple(v) for k, v in out.items()}


async def announce(connection: Connection) -> None:
    """Tell every process, once this transaction commits, that profiles may have changed."""
    await versions.bump(connection, versions.PROFILES, CHANNEL)


def validate_write(resource: dict[str, Any]) -> list[ValidationIssue]:
    """Issues of a resource being written against the profiles it claims or must meet.

    Claimed profiles that are not loaded are ignored; a required one that is not loaded is an
    error. Without an active registry (e.g. `santong load` straight into the database) nothing
    is checked.
    """
    registry = _active.get()
    if registry is None:
        return []
    current = registry.current
    rtype = resource.get("resourceType", "")
    meta = resource.get("meta")
    if rtype not in current.required and not (isinstance(meta, dict) and meta.get("profile")):
        return []
    profiles, missing = current.claimed(resource)
    issues = [ValidationIssue("error", "not-supported",
                              f"Profile {url} is required for {rtype} "
                              "(SANTONG_REQUIRED_PROFILES) but is not loaded", rtype)
              for url in missing]
    if profiles:
        issues.extend(validate_against(resource, profiles, current))
    return issues


def _bound_value_sets(profile: Profile) -> set[str]:
    found: set[str] = set()
    stack = [profile.root]
    while stack:
        node = stack.pop()
        if node.binding is not None:
            found.add(node.binding[1])
        stack.extend(node.children)
        stack.extend(node.slices)
    return found


def _key(resource: dict[str, Any], raw: bytes | None = None) -> str:
    return hashlib.sha1(raw if raw is not None else orjson.dumps(resource)).hexdigest()


class ProfileRegistry:
    """Profiles and bound ValueSets of one process, synchronised with the database."""

    def __init__(self, engine: AsyncEngine | None, required: str | None = None) -> None:
        self.engine = engine
        self.version = -1
        self.required = parse_required(required)
        self.current = ProfileSet(required=self.required)
        # Resources from folders (load_folder): url -> resource, by type.
        self.package: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in WATCHED_TYPES}
        self._compiled: dict[str, Profile] = {}  # content hash -> compiled profile
        self._lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._poller: asyncio.Task[None] | None = None

    # -- sources -----------------------------------------------------------------------------

    def load_resources(self, resources: Iterable[dict[str, Any]]) -> int:
        """Add StructureDefinitions, ValueSets and CodeSystems (others are skipped)."""
        count = 0
        for resource in resources:
            rtype, url = resource.get("resourceType"), resource.get("url")
            if rtype == "Bundle":
                count += self.load_resources(
                    e["resource"] for e in resource.get("entry", [])
                    if isinstance(e, dict) and isinstance(e.get("resource"), dict))
            elif rtype in self.package and isinstance(url, str):
                self.package[rtype][url] = resource
                count += 1
        self.rebuild([], {}, {})
        return count

    def load_folder(self, folder: str | Path) -> int:
        """Load a package folder's conformance resources (santong.packages.read_package); how
        many were kept. Takes effect at once for package content; the next sync merges what
        the database holds.
        """
        count = self.load_resources(read_package(folder).resources)
        self.version = -1  # merge with the database at the next sync
        return count

    # -- building ----------------------------------------------------------------------------

    def _compile(self, resource: dict[str, Any], raw: bytes | None = None) -> Profile | None:
        key = _key(resource, raw)
        found = self._compiled.get(key)
        if found is not None:
            return found
        try:
            found = compile_profile(resource)
        except ProfileError as exc:
            log.info("StructureDefinition %s not used for validation: %s",
                     resource.get("url"), exc)
            return None
        self._compiled[key] = found
        return found

    def rebuild(self, stored: list[tuple[dict[str, Any], bytes]],
                value_sets: dict[str, dict[str, Any]],
                code_systems: dict[str, dict[str, Any]]) -> None:
        """Swap in a new ProfileSet from the package and `stored` StructureDefinitions."""
        self.install(self.profiles(stored), value_sets, code_systems)

    def profiles(self, stored: list[tuple[dict[str, Any], bytes]]) -> dict[str, Profile]:
        """The package's and `stored` StructureDefinitions, compiled (from cache when unchanged)."""
        profiles: dict[str, Profile] = {}
        keys: set[str] = set()
        candidates = [(r, None) for r in self.package["StructureDefinition"].values()]
        for resource, raw in [*candidates, *stored]:
            if resource.get("status") == "retired":
                continue
            profile = self._compile(resource, raw)
            if profile is not None:
                profiles[profile.url] = profile
                keys.add(_key(resource, raw))
        self._compiled = {k: v for k, v in self._compiled.items() if k in keys}
        return profiles

    def install(self, profiles: dict[str, Profile], value_sets: dict[str, dict[str, Any]],
                code_systems: dict[str, dict[str, Any]]) -> set[str]:
        """Swap in a new ProfileSet; returns the bound ValueSet urls it could not resolve."""
        all_vs = {**self.package["ValueSet"], **value_sets}
        all_cs = {**self.package["CodeSystem"], **code_systems}
        codes: dict[str, Codes] = {}
        missing: set[str] = set()
        for url in sorted({u for p in profiles.values() for u in _bound_value_sets(p)}):
            value_set = all_vs.get(url)
            if value_set is None:
                missing.add(url)
                continue
            try:
                codes[url] = expand(value_set, lambda u: all_vs.get(u.split("|")[0]),
                                    lambda u: all_cs.get(u.split("|")[0]))
            except Undecidable as exc:
                log.info("ValueSet %s: bindings not checked: %s", url, exc)
        self.current = ProfileSet(
            profiles=profiles, codes=codes, required=self.required,
            has_extensions=any(p.type == "Extension" for p in profiles.values()))
        return missing

    # -- the database ------------------------------------------------------------------------

    async def sync(self, *, force: bool = False) -> None:
        if self.engine is None:
            return
        async with self._lock, self.engine.connect() as connection:
            version = await versions.current(connection, versions.PROFILES)
            if version == self.version and not force:
                return
            stored = []
            for (content,) in await connection.execute(_DEFINITIONS):
                raw = content.encode()
                stored.append((orjson.loads(raw), raw))
            value_sets: dict[str, dict[str, Any]] = {}
            code_systems: dict[str, dict[str, Any]] = {}
            profiles = self.profiles(stored)
            missing = {u for p in profiles.values() for u in _bound_value_sets(p)}
            # Bound ValueSets, the ValueSets they import and the CodeSystems they draw on.
            for _ in range(10):
                wanted_cs = {
                    part["system"] for vs in value_sets.values()
                    for section in ("include", "exclude")
                    for part in (vs.get("compose") or {}).get(section, [])
                    if isinstance(part.get("system"), str)} - set(code_systems)
                wanted_vs = {
                    ref.split("|")[0] for vs in value_sets.values()
                    for section in ("include", "exclude")
                    for part in (vs.get("compose") or {}).get(section, [])
                    for ref in part.get("valueSet", []) if isinstance(ref, str)}
                wanted_vs = (wanted_vs | missing) - set(value_sets)
                missing = set()
                if not wanted_vs and not wanted_cs:
                    break
                for rtype, urls, into in (("ValueSet", wanted_vs, value_sets),
                                          ("CodeSystem", wanted_cs, code_systems)):
                    if urls:
                        rows = await connection.execute(_BY_URL, {"type": rtype,
                                                                  "urls": sorted(urls)})
                        for (content,) in rows:
                            resource = orjson.loads(content)
                            into[resource["url"]] = resource
                        for url in urls:  # not stored: do not ask again
                            into.setdefault(url, {})
            value_sets = {u: v for u, v in value_sets.items() if v}
            code_systems = {u: c for u, c in code_systems.items() if c}
            self.install(profiles, value_sets, code_systems)
            self.version = version

    async def start(self, poll_seconds: float = 30.0) -> None:
        """Load what is stored, then follow changes (NOTIFY, and a poll as a safety net)."""
        if self.engine is None:
            return
        self._poller = asyncio.create_task(self._poll(poll_seconds))
        await self.sync(force=True)
        try:
            self._listener = await asyncpg.connect(**asyncpg_connect_args(self.engine.url),
                                                   timeout=5)
            await self._listener.add_listener(CHANNEL, self._notified)
        except Exception as exc:  # polling still keeps processes consistent
            log.warning("cannot LISTEN for profile changes (%s); polling only", exc)

    def _notified(self, *_: object) -> None:
        asyncio.get_running_loop().create_task(self._safe_sync())

    async def _safe_sync(self) -> None:
        try:
            await self.sync()
        except Exception as exc:
            log.warning("profile reload failed: %s", exc)

    async def _poll(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._safe_sync()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._listener is not None:
            await self._listener.close(timeout=5)
