"""Telemed: a regional telemedicine collaboration platform on one FHIR R4 data platform."""

__version__ = "0.1.0"
