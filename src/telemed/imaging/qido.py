"""QIDO-RS (PS3.18 §10.6): search studies, series and instances; DICOM JSON results.

Query parameters are attribute keywords or tags (``PatientID=...``, ``00100020=...``) matched with
the C-FIND rules of :mod:`telemed.imaging.index`; ``includefield`` (repeatable, comma-separated,
or ``all``), ``limit``, ``offset`` and ``fuzzymatching`` (person names by prefix, any case).
Attributes outside the index come from the DICOM JSON of one instance of the study or series.
"""

from __future__ import annotations

import orjson
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import Connection, func, select

from telemed.db.schema import dicom_instance as t_instance
from telemed.fhir.store.context import AccessContext
from telemed.imaging import index
from telemed.imaging.model import BASE_PLACEHOLDER
from telemed.kernel.errors import Category, TelemedError, incorrect

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
CONTROL = {"includefield", "limit", "offset", "fuzzymatching"}


def _keyword(name: str) -> str:
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        kw = keyword_for_tag(int(name, 16))
        if kw:
            return kw
    if tag_for_keyword(name) is None:
        raise incorrect(f"{name!r} is neither an attribute keyword nor a tag")
    return name


def parse(params: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], set[str] | str, int, int, bool]:
    criteria, include, limit, offset, fuzzy = [], set(), DEFAULT_LIMIT, 0, False
    for name, value in params:
        if name == "includefield":
            for field in value.split(","):
                if field.strip() == "all":
                    include = "all"
                elif include != "all" and field.strip():
                    include.add(_keyword(field.strip()))
        elif name in ("limit", "offset"):
            try:
                n = int(value)
            except ValueError:
                raise incorrect(f"{name} must be a number") from None
            if n < 0:
                raise incorrect(f"{name} must not be negative")
            if name == "limit":
                limit = min(n, MAX_LIMIT)
            else:
                offset = n
        elif name == "fuzzymatching":
            fuzzy = value.lower() == "true"
        else:
            criteria.append((_keyword(name), value))
    return criteria, include, limit, offset, fuzzy


def _set(ds: Dataset, keyword: str, value) -> None:
    if value is None or value == "":
        ds.add_new(tag_for_keyword(keyword), dictionary_VR(keyword), None)
    else:
        setattr(ds, keyword, value)


def search(
    conn: Connection,
    ctx: AccessContext,
    now,
    base: str,
    level: str,
    params: list[tuple[str, str]],
    scope: dict[str, str],
) -> bytes:
    """DICOM JSON array of the matches at ``level`` (``scope``: UIDs from the URL path)."""
    criteria, include, limit, offset, fuzzy = parse(params)
    criteria += list(scope.items())
    try:
        rows = index.query(conn, ctx, now, level, criteria, limit=limit, offset=offset, fuzzy=fuzzy, strict=True)
    except index.UnsupportedKey as exc:
        raise TelemedError(Category.INCORRECT, f"Cannot match on {exc} at the {level.lower()} level") from None
    wanted = list(index.DEFAULT_KEYS[level])
    if include == "all":
        depth = index.LEVELS.index(level)
        wanted += [k for k, key in index.KEYS.items() if index.LEVELS.index(key.level) <= depth and k not in wanted]
        extra: list[str] = []
    else:
        extra = [k for k in include if k not in index.KEYS]
        wanted += [k for k in include if k in index.KEYS and k not in wanted]
    wanted += [k for k, _ in criteria if k in index.KEYS and k not in wanted]
    out = []
    for row in rows:
        ds = Dataset()
        for kw in wanted:
            if kw in row:
                _set(ds, kw, row[kw])
        doc = ds.to_json_dict()
        if extra:
            doc.update(_from_metadata(conn, level, row, extra))
        doc["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base, level, row)]}
        out.append(doc)
    return orjson.dumps(out)


def _retrieve_url(base: str, level: str, row: dict) -> str:
    url = f"{base}/studies/{row.get('StudyInstanceUID', '')}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


def _from_metadata(conn: Connection, level: str, row: dict, keywords: list[str]) -> dict:
    """Attributes outside the index, from one instance of the matched study/series/instance."""
    if level == "IMAGE":
        cond = t_instance.c.sop_instance_uid == row["SOPInstanceUID"]
    elif level == "SERIES":
        cond = t_instance.c.series_uid == row["SeriesInstanceUID"]
    elif level == "STUDY":
        cond = t_instance.c.study_uid == row["StudyInstanceUID"]
    else:
        return {}
    first = select(func.min(t_instance.c.sop_instance_uid)).where(cond).scalar_subquery()
    meta = conn.execute(select(t_instance.c.metadata).where(t_instance.c.sop_instance_uid == first)).scalar()
    if meta is None:
        return {}
    doc = orjson.loads(bytes(meta).replace(BASE_PLACEHOLDER, b""))
    out = {}
    for kw in keywords:
        tag = f"{tag_for_keyword(kw):08X}"
        if tag in doc and "BulkDataURI" not in doc[tag]:
            out[tag] = doc[tag]
    return out
