"""Annotations on a slide (point, line with its length, polygon with its area, text), kept as FHIR.

Each annotation is a FHIR R4 ``Basic`` (§Basic: "a resource for concepts not yet defined by FHIR")
coded ``slide-annotation``, whose subject is the slide's patient, so that exactly the people who
may see the slide's patient see its annotations, through the store's own access rules. The
geometry is in level-0 image pixels (what OpenSeadragon's ``imageToViewportCoordinates`` takes);
the measurements in micrometres are computed here from the slide's pixel size, once, and kept.
"""

from __future__ import annotations

import json
import math

from telemed.fhir.search import query as fhir_query
from telemed.fhir.store import searching
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.errors import Category, Issue, TelemedError
from telemed.pathology.slide import SlideInfo

URL = "https://telemed.example.cn/fhir/StructureDefinition/slide-annotation"
CODE_SYSTEM = "https://telemed.example.cn/fhir/CodeSystem/pathology"
CODE = "slide-annotation"
KINDS = {"point": (1, 1), "line": (2, 2), "polygon": (3, 500), "text": (1, 1)}


def _bad(message: str, where: str) -> TelemedError:
    return TelemedError(Category.UNPROCESSABLE, message, [Issue(message, "invalid", where)])


def length_um(points: list[tuple[float, float]], info: SlideInfo) -> float | None:
    if not info.mpp_x:
        return None
    mx, my = info.mpp_x, info.mpp_y or info.mpp_x
    return sum(math.hypot((b[0] - a[0]) * mx, (b[1] - a[1]) * my) for a, b in zip(points, points[1:], strict=False))


def area_um2(points: list[tuple[float, float]], info: SlideInfo) -> float | None:
    """Shoelace formula over the closed polygon, in µm²."""
    if not info.mpp_x:
        return None
    twice = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(points, points[1:] + points[:1], strict=True))
    return abs(twice) / 2 * info.mpp_x * (info.mpp_y or info.mpp_x)


def build(slide_id: str, subject: str, info: SlideInfo, body: dict, ctx: AccessContext, now: str) -> dict:
    kind = body.get("kind")
    if kind not in KINDS:
        raise _bad("An annotation is a point, a line, a polygon or a text", "kind")
    try:
        points = [(float(x), float(y)) for x, y in body.get("points") or []]
    except (TypeError, ValueError):
        raise _bad("Points are [x, y] pairs of numbers", "points") from None
    low, high = KINDS[kind]
    if not low <= len(points) <= high:
        raise _bad(f"A {kind} has {low}" + ("" if low == high else f" to {high}") + " points", "points")
    if any(not (0 <= x <= info.width and 0 <= y <= info.height) for x, y in points):
        raise _bad("A point lies outside the slide", "points")
    text = str(body.get("text") or "").strip()[:500]
    if kind == "text" and not text:
        raise _bad("A text annotation needs its text", "text")
    parts = [
        {"url": "slide", "valueReference": {"reference": f"ImagingStudy/{slide_id}"}},
        {"url": "kind", "valueCode": kind},
        {"url": "geometry", "valueString": json.dumps([[round(x, 1), round(y, 1)] for x, y in points])},
    ]
    if text:
        parts.append({"url": "text", "valueString": text})
    measure = length_um(points, info) if kind == "line" else area_um2(points, info) if kind == "polygon" else None
    if measure is not None:
        parts.append({"url": "length-um" if kind == "line" else "area-um2", "valueDecimal": round(measure, 2)})
    resource = {
        "resourceType": "Basic",
        "code": {"coding": [{"system": CODE_SYSTEM, "code": CODE, "display": "Slide annotation"}]},
        "subject": {"reference": subject},
        "created": now[:10],
        "extension": [{"url": URL, "extension": parts}],
    }
    if ctx.practitioner:
        resource["author"] = {"reference": f"Practitioner/{ctx.practitioner}"}
    return resource


def to_json(resource: dict) -> dict:
    """The annotation as the viewer draws it."""
    parts = {
        e["url"]: e
        for e in next((e for e in resource.get("extension", []) if e.get("url") == URL), {}).get("extension", [])
    }

    def value(name: str):
        e = parts.get(name) or {}
        return next((v for k, v in e.items() if k.startswith("value")), None)

    meta = resource.get("meta") or {}
    return {
        "id": resource["id"],
        "kind": value("kind"),
        "points": json.loads(value("geometry") or "[]"),
        "text": value("text"),
        "length_um": value("length-um"),
        "area_um2": value("area-um2"),
        "author": (resource.get("author") or {}).get("reference"),
        "updated": meta.get("lastUpdated"),
    }


def slide_of(resource: dict) -> str | None:
    for e in resource.get("extension", []):
        if e.get("url") == URL:
            for part in e.get("extension", []):
                if part.get("url") == "slide":
                    return part["valueReference"]["reference"].removeprefix("ImagingStudy/")
    return None


def add(repo: Repository, ctx: AccessContext, slide_id: str, info: SlideInfo, body: dict, now: str) -> dict:
    study = repo.read("ImagingStudy", slide_id).resource  # 404 unless the caller may see the slide
    stored = repo.create("Basic", build(slide_id, study["subject"]["reference"], info, body, ctx, now))
    return to_json(stored.resource)


def for_slide(repo: Repository, slide_id: str) -> list[dict]:
    study = repo.read("ImagingStudy", slide_id).resource
    q = fhir_query.parse("Basic", [("code", f"{CODE_SYSTEM}|{CODE}"), ("subject", study["subject"]["reference"]),
                                   ("_count", "1000")])  # fmt: skip
    out = []
    for id_ in searching.find_ids(repo, q, limit=1000):
        resource = repo.read("Basic", id_).resource
        if slide_of(resource) == slide_id:
            out.append(to_json(resource))
    return sorted(out, key=lambda a: a["updated"] or "")
