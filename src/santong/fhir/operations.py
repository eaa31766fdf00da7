"""The operations the server offers — http://hl7.org/fhir/R4/operations.html.

An operation is named by a `$name` path segment at the system (`[base]/$name`), type
(`[base]/[type]/$name`) or instance (`[base]/[type]/[id]/$name`) level. One table says where
each is defined, on which resource types and with which HTTP methods: the router builds its
routes from it and the CapabilityStatement lists it, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from santong.fhir.interactions.everything import patient_everything
from santong.fhir.interactions.reindex import reindex
from santong.fhir.interactions.terminology import (
    expand_value_set,
    lookup_code,
    translate_code,
    validate_code,
)
from santong.fhir.interactions.validate import validate

if TYPE_CHECKING:
    from santong.fhir.call import Call
    from santong.fhir.request import FhirResponse

Handler = Callable[["Call"], Awaitable["FhirResponse"]]
CORE = "http://hl7.org/fhir/OperationDefinition/"
_BOTH = ("GET", "POST")


@dataclass(frozen=True)
class Operation:
    handler: Handler
    # HTTP methods at each level it is defined on: "system", "type", "instance".
    levels: dict[str, tuple[str, ...]]
    # The OperationDefinition, per resource type it is defined on; "*" for every type.
    definitions: dict[str, str] = field(default_factory=dict)

    def defined_on(self, resource_type: str) -> bool:
        return "*" in self.definitions or resource_type in self.definitions

    def definition(self, resource_type: str) -> str:
        return self.definitions.get(resource_type) or self.definitions["*"]


OPERATIONS: dict[str, Operation] = {
    "$validate": Operation(validate, {"type": ("POST",), "instance": _BOTH},
                           {"*": CORE + "Resource-validate"}),
    "$expand": Operation(expand_value_set, {"type": _BOTH, "instance": _BOTH},
                         {"ValueSet": CORE + "ValueSet-expand"}),
    "$validate-code": Operation(validate_code, {"type": _BOTH, "instance": _BOTH}, {
        "ValueSet": CORE + "ValueSet-validate-code",
        "CodeSystem": CORE + "CodeSystem-validate-code"}),
    "$lookup": Operation(lookup_code, {"type": _BOTH}, {"CodeSystem": CORE + "CodeSystem-lookup"}),
    "$translate": Operation(translate_code, {"type": _BOTH, "instance": _BOTH},
                            {"ConceptMap": CORE + "ConceptMap-translate"}),
    "$everything": Operation(patient_everything, {"instance": _BOTH},
                             {"Patient": CORE + "Patient-everything"}),
    # Rebuilds search indexes (after a custom SearchParameter); not an HL7 operation, so its
    # definition is the project's own (placeholder canonical base).
    "$reindex": Operation(reindex, {"system": ("POST",), "type": ("POST",)}, {
        "*": "http://santong.example.org/fhir/OperationDefinition/reindex"}),
}


def routes() -> dict[tuple[str, ...], dict[str, Handler]]:
    """Route shapes ("T" a type, "I" an id, `$name` literal) to handlers by method."""
    shapes = {"system": (), "type": ("T",), "instance": ("T", "I")}
    return {(*shapes[level], name): dict.fromkeys(methods, operation.handler)
            for name, operation in OPERATIONS.items()
            for level, methods in operation.levels.items()}


def type_operations(resource_type: str) -> list[dict[str, str]]:
    """CapabilityStatement.rest.resource.operation entries for a resource type."""
    return [{"name": name[1:], "definition": operation.definition(resource_type)}
            for name, operation in OPERATIONS.items()
            if ("type" in operation.levels or "instance" in operation.levels)
            and operation.defined_on(resource_type)]


def system_operations() -> list[dict[str, str]]:
    return [{"name": name[1:], "definition": operation.definition("*")}
            for name, operation in OPERATIONS.items() if "system" in operation.levels]
