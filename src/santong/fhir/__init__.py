"""The transport-independent FHIR core: a FhirRequest in, a FhirResponse out.

Nothing here knows about HTTP frameworks; `santong.api` adapts FastAPI to it, and Bundle
processing re-enters `Router.dispatch` for each entry.
"""
