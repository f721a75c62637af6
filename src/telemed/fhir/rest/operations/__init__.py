"""FHIR operations, one module per ``$operation``."""
