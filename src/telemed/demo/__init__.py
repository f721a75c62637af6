"""The demo network: a fictional province (岚江省) with a four-tier telemedicine network.

:mod:`telemed.demo.network` builds the FHIR resources as plain data (deterministic, no I/O);
:mod:`telemed.demo.loader` writes them through the validating repository (``telemed demo``).
"""
