"""The FHIR RESTful API (R4 §3.1.0) without the web framework: ``(FhirRequest, Repository) -> FhirResponse``.

Bundles send each entry back through the same :func:`dispatch.dispatch`.
"""
