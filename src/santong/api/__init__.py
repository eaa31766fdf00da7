"""The HTTP adapter: FastAPI in front of the transport-independent FHIR core."""
