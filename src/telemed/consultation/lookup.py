"""Small FHIR lookups the consultation modules share (through the caller's repository)."""

from __future__ import annotations

from telemed.fhir.search.query import parse
from telemed.fhir.store import searching
from telemed.fhir.store.repository import Repository, Stored
from telemed.kernel.errors import Category, TelemedError


def find(repo: Repository, rt: str, params: list[tuple[str, str]], count: int = 200) -> list[Stored]:
    return searching.search(repo, parse(rt, [*params, ("_count", str(count))]), "").matches


def read_if_exists(repo: Repository, rt: str, id_: str) -> Stored | None:
    try:
        return repo.read(rt, id_)
    except TelemedError as exc:
        if exc.category in (Category.NOT_FOUND, Category.GONE):
            return None
        raise
