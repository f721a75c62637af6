"""FHIR search (R4 §3.1.1). Today: indexing of identifiers and the parameters conditional
interactions need (``_id``, ``identifier``); the search issue adds every SearchParameter."""
