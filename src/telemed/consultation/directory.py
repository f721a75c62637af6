"""Who is who: practitioners, their roles, titles and institutions, as consultation pages show them.

Directory data (Organization, Practitioner, PractitionerRole) is readable by every signed-in
user, so this is loaded through the caller's repository like everything else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from telemed.consultation.lookup import find
from telemed.consultation.service import MIN_YEARS_TO_CONSULT, years_in_practice
from telemed.fhir.store.repository import Repository

TIER_SYSTEM = "https://telemed.example.cn/fhir/CodeSystem/institution-tier"
TITLE_SYSTEM = "https://telemed.example.cn/fhir/CodeSystem/professional-title"
# SNOMED CT practice settings used for specialties (zh, en).
SPECIALTY_NAMES = {
    "394579002": ("心血管内科", "Cardiology"),
    "394914008": ("放射科", "Radiology"),
    "394915009": ("病理科", "Pathology"),
    "394591006": ("神经内科", "Neurology"),
    "394609007": ("普通外科", "General surgery"),
    "418112009": ("呼吸内科", "Respiratory medicine"),
    "394593009": ("肿瘤科", "Oncology"),
    "394583002": ("内分泌科", "Endocrinology"),
    "394537008": ("儿科", "Paediatrics"),
    "394814009": ("全科", "General practice"),
}


@dataclass
class Person:
    id: str
    name: str
    title: str = ""
    organization: str | None = None
    specialty: str | None = None
    years: int | None = None  # in practice (the 3-year rule for consultants)
    institution: str = ""  # an institution outside the network, named as text (an invited expert's)


_CACHE: dict[int, tuple[float, Directory]] = {}


@dataclass
class Directory:
    people: dict[str, Person] = field(default_factory=dict)
    organizations: dict[str, str] = field(default_factory=dict)  # id -> name
    tiers: dict[str, str] = field(default_factory=dict)  # id -> province/city/county/township

    @classmethod
    def cached(cls, repo: Repository, ttl: float = 60.0, knowing: Iterable[str] = ()) -> Directory:
        """The directory, reloaded at most every ``ttl`` seconds per database: institutions and
        staff change rarely, and every signed-in user may read them, so one copy serves all.
        Reloaded at once when it does not know one of the practitioners ``knowing`` (an external
        expert invited a minute ago)."""
        key = id(repo.conn.engine)
        hit = _CACHE.get(key)
        now = time.monotonic()
        if hit is None or now - hit[0] > ttl or any(p not in hit[1].people for p in knowing if p):
            hit = (now, cls.load(repo))
            _CACHE[key] = hit
        return hit[1]

    @classmethod
    def load(cls, repo: Repository) -> Directory:
        d = cls()
        for o in find(repo, "Organization", [], 1000):
            r = o.resource
            d.organizations[r["id"]] = r.get("name", r["id"])
            for t in r.get("type", []):
                for c in t.get("coding", []):
                    if c.get("system") == TIER_SYSTEM:
                        d.tiers[r["id"]] = c["code"]
        for p in find(repo, "Practitioner", [], 1000):
            r = p.resource
            name = (r.get("name") or [{}])[0]
            title = ""
            for q in r.get("qualification", []):
                for c in (q.get("code") or {}).get("coding", []):
                    if c.get("system") == TITLE_SYSTEM:
                        title = c.get("display", "")
            d.people[r["id"]] = Person(r["id"], name.get("text") or name.get("family", "") + "".join(
                name.get("given", [])) or r["id"], title, years=years_in_practice(r, repo.clock.now()))  # fmt: skip
        for pr in find(repo, "PractitionerRole", [], 1000):
            r = pr.resource
            pid = (r.get("practitioner") or {}).get("reference", "").removeprefix("Practitioner/")
            person = d.people.get(pid)
            if person is None:
                continue
            person.organization = (r.get("organization") or {}).get("reference", "").removeprefix("Organization/")
            person.institution = (r.get("organization") or {}).get("display", "")
            person.specialty = ((r.get("specialty") or [{}])[0].get("coding") or [{}])[0].get("code")
        return d

    def name(self, practitioner: str | None) -> str:
        p = self.people.get(practitioner or "")
        return p.name if p else (practitioner or "")

    def org_of(self, practitioner: str | None) -> str:
        p = self.people.get(practitioner or "")
        return (self.organizations.get(p.organization or "", "") or p.institution) if p else ""

    def experts(self) -> list[Person]:
        """Consultants: doctors at the province and city tiers (the experts the centre routes to) with
        at least the three years of practice the 2018 rules require."""
        return [p for p in self.people.values() if self.tiers.get(p.organization or "") in ("province", "city")
                and (p.years is None or p.years >= MIN_YEARS_TO_CONSULT)]  # fmt: skip


def specialty_name(code: str | None, lang: str) -> str:
    names = SPECIALTY_NAMES.get(code or "")
    if not names:
        return code or ""
    return names[0] if lang.startswith("zh") else names[1]
