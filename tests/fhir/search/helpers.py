"""Helpers shared by the search tests (R4 §3.1.1).

The database is shared by every test of a session, so each test tags what it creates with a tag
of its own (``meta.tag``) and every search adds ``_tag=<that tag>``. A :class:`Scenario` keeps the
created resources by label, so assertions read as sets of labels: ``{"A", "C"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from tests.conftest import unique

TAG_SYSTEM = "http://telemed.test/CodeSystem/search-test"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

Params = Sequence[tuple[str, str]] | Mapping[str, str]


def new_tag() -> str:
    return unique("tag")


def tag_param(tag: str) -> tuple[str, str]:
    return ("_tag", f"{TAG_SYSTEM}|{tag}")


def tagged(resource: dict, tag: str) -> dict:
    meta = resource.setdefault("meta", {})
    meta.setdefault("tag", []).append({"system": TAG_SYSTEM, "code": tag})
    return resource


def create(client: httpx.Client, resource: dict, tag: str | None = None) -> dict:
    if tag is not None:
        tagged(resource, tag)
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def update(client: httpx.Client, resource: dict) -> dict:
    r = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code == 200, r.text
    return r.json()


def _params(params: Params, tag: str | None) -> list[tuple[str, str]]:
    out = list(params.items()) if isinstance(params, Mapping) else list(params)
    if tag is not None:
        out.append(tag_param(tag))
    return out


def search(client: httpx.Client, path: str, params: Params = (), tag: str | None = None, **kw) -> dict:
    """GET a search and check it is a searchset Bundle."""
    r = client.get(path, params=_params(params, tag), **kw)
    assert r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text}"
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset", bundle
    return bundle


def search_error(client: httpx.Client, path: str, params: Params, status: int = 400, **kw) -> dict:
    """A search that must fail with ``status`` and an OperationOutcome."""
    r = client.get(path, params=_params(params, None), **kw)
    assert r.status_code == status, f"GET {path} {params}: expected {status}, got {r.status_code} {r.text}"
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert any(i["severity"] in ("error", "fatal") for i in outcome["issue"]), outcome
    return outcome


def entries(bundle: dict, mode: str = "match") -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def ids(bundle: dict, mode: str = "match") -> list[str]:
    return [r["id"] for r in entries(bundle, mode)]


def link(bundle: dict, relation: str) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)


def mentions(outcome: dict, text: str) -> bool:
    """Whether an OperationOutcome names ``text`` in an issue's diagnostics or expression."""
    for issue in outcome.get("issue", []):
        if text in issue.get("diagnostics", "") or any(text in e for e in issue.get("expression", [])):
            return True
    return False


class Scenario:
    """The resources of one test, created with its tag and remembered by label."""

    def __init__(self, client: httpx.Client):
        self.client = client
        self.tag = new_tag()
        self.by_label: dict[str, dict] = {}

    def add(self, label: str, resource: dict) -> dict:
        created = create(self.client, resource, self.tag)
        self.by_label[label] = created
        return created

    def id(self, label: str) -> str:
        return self.by_label[label]["id"]

    def ref(self, label: str) -> str:
        r = self.by_label[label]
        return f"{r['resourceType']}/{r['id']}"

    def label_of(self, resource_id: str) -> str:
        return next((lb for lb, r in self.by_label.items() if r["id"] == resource_id), resource_id)

    def labels(self, resource_ids) -> set[str]:
        return {self.label_of(i) for i in resource_ids}

    def bundle(self, path: str, params: Params = (), scoped: bool = True, **kw) -> dict:
        return search(self.client, path, params, self.tag if scoped else None, **kw)

    def find(self, path: str, params: Params = (), scoped: bool = True, **kw) -> set[str]:
        """Labels of the matches (unknown ids are returned as they are); duplicates fail."""
        found = ids(self.bundle(path, params, scoped, **kw))
        assert len(found) == len(set(found)), f"duplicate matches: {found}"
        return self.labels(found)
