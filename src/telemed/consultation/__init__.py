"""Teleconsultation (综合会诊): request, quality check, triage, scheduling, opinion, signed report.

Public API for the other packages (the portal and the demo): the workflow, the FHIR mapping and
the use cases. Nothing else in this package is imported from outside it.
"""

from telemed.consultation import invitation, model, service, workflow
from telemed.consultation.service import Env, Loaded, Notice
from telemed.consultation.sla import SlaPolicy

__all__ = ["Env", "Loaded", "Notice", "SlaPolicy", "invitation", "model", "service", "workflow"]
