"""Validation of FHIR R4 resources (structural, see :mod:`santong.validation.structure`)."""

from santong.validation.structure import (
    MAX_DEPTH,
    MAX_ISSUES,
    ValidationIssue,
    validate_resource,
)

__all__ = ["MAX_DEPTH", "MAX_ISSUES", "ValidationIssue", "validate_resource"]
