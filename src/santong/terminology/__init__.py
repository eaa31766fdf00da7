"""Terminology over the CodeSystems, ValueSets and ConceptMaps stored on this server.

http://hl7.org/fhir/R4/terminology-service.html — the one implementation behind the
operations (`$expand`, `$validate-code`, `$lookup`, `$translate`, in
`fhir/interactions/terminology.py`) and the search modifiers `:in`, `:not-in`, `:below`,
`:above` (`search/terminology.py`):

- `store`: definitions fetched by canonical url (`url|version`) or `Type/id`, cached per call;
- `codesystem`: a CodeSystem's concepts indexed by code, with the is-a hierarchy (nested
  concepts and `parent`/`child` properties), lookup and subsumption;
- `expansion`: ValueSet compose (include/exclude, concept lists, whole systems, filters,
  valueSet imports) → an ordered, de-duplicated list of codes;
- `conceptmap`: ConceptMap translation, forwards and in reverse.

Failures are `TerminologyError`s (an issue code and a message, optionally the parameter to
blame); callers turn them into OperationOutcomes with the status that suits them.
"""

from santong.terminology.errors import TerminologyError

__all__ = ["TerminologyError"]
