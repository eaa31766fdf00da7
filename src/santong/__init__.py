"""Santong (三通): a FHIR R4 interoperability server for county medical communities."""

__version__ = "0.1.0"
