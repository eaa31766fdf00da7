"""Patient/[id]/$everything — http://hl7.org/fhir/R4/operation-patient-everything.html.

The patient's record in one searchset: every resource in the patient's compartment
(http://hl7.org/fhir/R4/compartmentdefinition-patient.html) and the resources they refer to
(`_include=*`: practitioners, organizations, …), paged like a search. Parameters: `_since`
(changed since an instant), `_type` (only these types), `_count`; `start` and `end` (the care
dates) are not supported and are refused rather than ignored. Given in the query or, for POST,
as a Parameters resource. The search machinery is the compartment search's, so the request
context's access filter applies to every resource returned.
"""

from __future__ import annotations

from typing import Any

from santong import definitions
from santong.fhir.call import Call
from santong.fhir.datetimes import parse_range
from santong.fhir.interactions.search_type import _run
from santong.fhir.interactions.terminology import Parameters
from santong.fhir.outcome import error
from santong.fhir.request import FhirResponse

# Accepted in the query: the operation's own parameters, and what its page links carry.
_PASSED_ON = frozenset({"_count", "_cursor", "_include", "_lastUpdated", "_elements",
                        "_summary", "_format", "_pretty"})
_UNSUPPORTED = frozenset({"start", "end"})


def _search_parameters(params: list[tuple[str, str]]) -> tuple[list[str] | None,
                                                               list[tuple[str, str]]]:
    types: list[str] | None = None
    search: list[tuple[str, str]] = []
    members = definitions.compartment("Patient")
    for name, value in params:
        if name == "_type":
            for resource_type in (t.strip() for t in value.split(",")):
                if resource_type != "Patient" and resource_type not in members:
                    raise error(400, "invalid", f"_type: {resource_type!r} is not in the "
                                "Patient compartment", expression="_type")
                types = [*(types or []), resource_type]
        elif name == "_since":
            try:
                parse_range(value)
            except ValueError:
                raise error(400, "invalid", f"_since must be an instant, not {value!r}",
                            expression="_since") from None
            search.append(("_lastUpdated", f"ge{value}"))
        elif name in _UNSUPPORTED:
            raise error(400, "not-supported", f"$everything parameter {name!r} is not "
                        "supported (use _since or _type)", expression=name)
        elif name in _PASSED_ON:
            search.append((name, value))
        else:
            raise error(400, "not-supported", f"Unknown $everything parameter {name!r}",
                        expression=name)
    if not any(name == "_include" for name, _ in search):
        search.append(("_include", "*"))
    return types, search


async def patient_everything(call: Call) -> FhirResponse:
    assert call.id is not None
    current = await call.tx.read_current("Patient", call.id)
    if current is None:
        raise error(404, "not-found", f"Patient/{call.id} is not known")
    if current.deleted:
        raise error(410, "deleted", f"Patient/{call.id} has been deleted")
    types, params = _search_parameters(Parameters(call).pairs())
    members = sorted({"Patient", *definitions.compartment("Patient")})
    chosen: list[Any] = members if types is None else sorted(set(types))
    return await _run(call, chosen, ("Patient", call.id), params)
