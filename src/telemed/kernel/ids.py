"""Server-assigned logical ids: random UUIDs, valid FHIR ids (``[A-Za-z0-9\\-\\.]{1,64}``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

IdGenerator = Callable[[], str]
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def new_id() -> str:
    return str(uuid.uuid4())


def is_valid_id(value: str) -> bool:
    return bool(FHIR_ID.fullmatch(value))
