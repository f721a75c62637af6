"""Moves large ``data`` strings (``Binary.data``, ``Attachment.data``, ``SampledData.data``) out of rows.

A ``data`` value longer than the threshold is written to the blob store and replaced in the stored
JSON by ``"blob:<sha256>"``. ``:`` never occurs in base64 nor in SampledData's alphabet, so the
marker cannot collide with real data. Reads put the data back, so clients never see the marker.
"""

from __future__ import annotations

from telemed.kernel.blobs import BlobStore

MARKER = "blob:"


def externalize(resource: dict, blobs: BlobStore, threshold: int) -> tuple[dict, bool]:
    moved = False

    def walk(node: object) -> object:
        nonlocal moved
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "data" and isinstance(v, str) and len(v) > threshold:
                    out[k] = MARKER + blobs.put(v.encode())
                    moved = True
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    stored = walk(resource)
    return stored, moved  # type: ignore[return-value]


def rehydrate(stored: dict, blobs: BlobStore) -> dict:
    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: (
                    blobs.get(v[len(MARKER) :]).decode()
                    if k == "data" and isinstance(v, str) and v.startswith(MARKER)
                    else walk(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(stored)  # type: ignore[return-value]
