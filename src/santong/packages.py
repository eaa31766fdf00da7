"""FHIR packages stored in the database at start-up: the bundled three-connections guide
(fhir_profiles/) and any folder `SANTONG_PROFILES_DIR` names.

A package's conformance resources (StructureDefinitions, CodeSystems, ValueSets, ConceptMaps,
SearchParameters, NamingSystems, the ImplementationGuide) are written like any client's, with
PUT through the router, so they are validated, indexed and announced: the profile registry,
the terminology operations and the custom SearchParameter registry of every process then pick
them up from the database (NOTIFY, and their polls). Nothing is held in one process's memory,
so processes sharing a database agree whatever each one's files are.

Installing is idempotent and safe when several processes start together: under an advisory
lock, a resource whose content (id and meta aside) is already stored, at its id or under the
same url and version, is skipped; only new or changed ones get a version.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from sqlalchemy import text

from santong.fhir.outcome import FhirError
from santong.fhir.request import FhirRequest

if TYPE_CHECKING:
    from santong.fhir.router import Router
    from santong.settings import Settings

log = logging.getLogger(__name__)

LOCK_KEY = "santong:install-package"
_SAME_URL = text(
    "SELECT r.resource_type, r.content FROM resource r JOIN search_uri u ON u.rid = r.rid"
    " WHERE u.code = 'url' AND u.value = ANY(:urls) AND NOT r.deleted"
)
_SAME_ID = text(
    "SELECT resource_type, id, content FROM resource"
    " WHERE id = ANY(:ids) AND NOT deleted"
)


def bundled_package_dir() -> Path | None:
    """fhir_profiles/: inside the installed wheel (santong/fhir_profiles), else the checkout's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "fhir_profiles", here.parents[1] / "fhir_profiles"):
        if (candidate / "package.json").is_file():
            return candidate
    return None


@dataclass
class Package:
    name: str
    version: str
    resources: list[dict[str, Any]]


@dataclass
class InstallResult:
    package: str
    written: list[str] = field(default_factory=list)  # Type/id, created or updated
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # resources with neither id nor url


def read_package(folder: str | Path) -> Package:
    """The resources in the top level of a package folder (examples in subfolders are not
    conformance resources and stay out); Bundles contribute their entries."""
    folder = Path(folder)
    name, version = folder.name, ""
    manifest = folder / "package.json"
    if manifest.is_file():
        meta = orjson.loads(manifest.read_bytes())
        name, version = str(meta.get("name", name)), str(meta.get("version", ""))
    resources: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        if path.name in ("package.json", ".index.json"):
            continue
        try:
            resource = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("package %s: %s skipped: %s", name, path.name, exc)
            continue
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        if resource["resourceType"] == "Bundle":
            resources += [e["resource"] for e in resource.get("entry", [])
                          if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        else:
            resources.append(resource)
    return Package(name, version, resources)


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """The content that matters: without id and the server's meta elements."""
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def _target(resource: dict[str, Any]) -> str | None:
    """Where a resource is PUT: its id, else a conditional update on its url."""
    rtype, rid, url = resource.get("resourceType"), resource.get("id"), resource.get("url")
    if isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    if isinstance(url, str) and url:
        return f"{rtype}?url={quote(url, safe='')}"
    return None


async def install(router: Router, folder: str | Path) -> InstallResult:
    """Store a package's resources that are not stored yet (or differ); see the module doc."""
    package = read_package(folder)
    result = InstallResult(f"{package.name}#{package.version}")
    async with router.repository.transaction() as tx:
        await tx.lock(LOCK_KEY)  # a second process starting now waits, then finds all stored
        ids = sorted({r["id"] for r in package.resources if isinstance(r.get("id"), str)})
        urls = sorted({r["url"] for r in package.resources if isinstance(r.get("url"), str)})
        by_id: dict[tuple[str, str], dict[str, Any]] = {}
        by_url: list[tuple[str, dict[str, Any]]] = []
        if ids:
            for rtype, rid, content in await tx.connection.execute(_SAME_ID, {"ids": ids}):
                by_id[(rtype, rid)] = _comparable(orjson.loads(content))
        if urls:
            for rtype, content in await tx.connection.execute(_SAME_URL, {"urls": urls}):
                by_url.append((rtype, _comparable(orjson.loads(content))))
        for resource in package.resources:
            rtype = resource["resourceType"]
            wanted = _comparable(resource)
            if (by_id.get((rtype, resource.get("id", ""))) == wanted
                    or (rtype, wanted) in by_url):
                result.unchanged += 1
                continue
            target = _target(resource)
            if target is None:
                result.skipped.append(f"{rtype}: neither an id nor a url")
                continue
            path, _, query = target.partition("?")
            request = FhirRequest(
                method="PUT", path=path, resource=resource,
                query=[("url", resource["url"])] if query else [])
            try:
                await router.dispatch(request, tx)
            except FhirError as exc:
                # All or nothing: a profile without the ValueSets it binds would mislead.
                raise PackageError(f"package {result.package}: {target} refused: {exc}"
                                   ) from None
            result.written.append(target)
    return result


class PackageError(Exception):
    """A package resource the server refused (the whole package is then not installed)."""


def configured_folders(settings: Settings) -> list[Path]:
    """The package folders to install: the bundled one (unless turned off), then
    SANTONG_PROFILES_DIR."""
    folders: list[Path] = []
    if settings.load_bundled_package:
        bundled = bundled_package_dir()
        if bundled is None:
            log.warning("the bundled FHIR package (fhir_profiles/) is not installed with the code")
        else:
            folders.append(bundled)
    if settings.profiles_dir is not None:
        folders.append(Path(settings.profiles_dir))
    return folders


async def install_configured(router: Router, settings: Settings) -> list[InstallResult]:
    results = []
    for folder in configured_folders(settings):
        result = await install(router, folder)
        log.info("FHIR package %s: %d resources stored, %d already current%s", result.package,
                 len(result.written), result.unchanged,
                 f", {len(result.skipped)} skipped" if result.skipped else "")
        results.append(result)
    return results


async def install_until_done(router: Router, settings: Settings,
                             retry_seconds: float = 5.0) -> None:
    """install_configured, retried while the database is unreachable (start-up goes on and
    answers 503 meanwhile); a package the server refuses is logged once and left out."""
    while True:
        try:
            await install_configured(router, settings)
            return
        except PackageError as exc:
            log.error("%s", exc)
            return
        except Exception as exc:
            log.warning("FHIR packages not stored yet (%s); retrying in %.0f s", exc,
                        retry_seconds)
        await asyncio.sleep(retry_seconds)
