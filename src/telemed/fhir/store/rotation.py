"""Key rotation for the encrypted fields: re-encrypt every stored value under the current key.

Put the new key first in ``TELEMED_ENCRYPTION_KEYS`` (the old ones after it: they still
decrypt), restart, run ``telemed keys rotate``; when it reports nothing left under old keys, the
old keys can be removed. Current and historical versions are both re-encrypted (a version's
content does not change, only the key its sensitive fields are sealed with). Each batch is its
own transaction, so the command can be interrupted and run again.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, select, tuple_, update

from telemed.db.engine import unit_of_work
from telemed.db.schema import resource as t_resource
from telemed.db.schema import resource_history as t_history
from telemed.fhir.store import protect
from telemed.kernel.crypto import FieldCipher, is_encrypted


def _old_keys(content: dict, cipher: FieldCipher) -> Counter:
    return Counter(cipher.key_id(v) for c, k in protect._slots(content) if is_encrypted(v := c[k])
                   and cipher.key_id(v) != cipher.current_id)  # fmt: skip


def _reseal(content: dict, cipher: FieldCipher) -> dict:
    def fn(value):
        if is_encrypted(value) and cipher.key_id(value) != cipher.current_id:
            return cipher.encrypt(cipher.decrypt(value))
        if not is_encrypted(value):
            return cipher.encrypt(value)  # written before encryption was switched on
        return value

    return protect._transform(content, fn)


def rotate(engine: Engine, cipher: FieldCipher, batch: int = 500) -> dict[str, int]:
    """Re-encrypt what is under old keys; returns how many rows were rewritten per table."""
    done = {"resource": 0, "resource_history": 0}
    for table, name, keys in ((t_resource, "resource", ("resource_type", "id")),
                              (t_history, "resource_history", ("resource_type", "id", "version_id"))):  # fmt: skip
        cols = [table.c[k] for k in keys]
        after = None
        while True:
            with unit_of_work(engine) as conn:
                q = select(*cols, table.c.content).where(table.c.resource_type.in_(sorted(protect.PROTECTED_TYPES)))
                if after is not None:
                    q = q.where(tuple_(*cols) > tuple_(*after))
                rows = conn.execute(q.order_by(*cols).limit(batch)).all()
                for row in rows:
                    content = row.content
                    if not content or not (_old_keys(content, cipher) or _plaintext(content)):
                        continue
                    where = [c == getattr(row, c.name) for c in cols]
                    conn.execute(update(table).where(*where).values(content=_reseal(content, cipher)))
                    done[name] += 1
            if len(rows) < batch:
                break
            after = tuple(getattr(rows[-1], k) for k in keys)
    return done


def _plaintext(content: dict) -> bool:
    return any(not is_encrypted(c[k]) for c, k in protect._slots(content))


def remaining(engine: Engine, cipher: FieldCipher) -> Counter:
    """Values still sealed with each old key (0 everywhere: the old keys may be removed)."""
    left: Counter = Counter()
    with unit_of_work(engine, write=False) as conn:
        for table in (t_resource, t_history):
            q = select(table.c.content).where(table.c.resource_type.in_(sorted(protect.PROTECTED_TYPES)))
            for (content,) in conn.execute(q):
                if content:
                    left.update(_old_keys(content, cipher))
    return left
