"""Who published a file, as its PEP 740 provenance object says: the publishers of its attestation bundles.

A bundle's ``publisher`` has a ``kind`` (``GitHub``, ``GitLab``, ``gitmirror-token``, ...) and claims,
either as keys beside ``kind`` (``repository``, ``workflow``, ``environment``) or in a ``claims``
object. Upstream chooses all of it, and nothing here verifies a signature (clients do): the page
shows it as text, and content of any other shape is skipped, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..storage.blobs import Blobs
from .web_data import PerTip

#: the most publishers and claims per publisher shown for one file
MAX_PUBLISHERS = 8
MAX_CLAIMS = 12
MAX_TEXT = 200


@dataclass(frozen=True)
class Publisher:
    """One bundle's publisher: its kind and its scalar claims as (name, value) text."""

    kind: str
    claims: list[tuple[str, str]] = field(default_factory=list)


def publishers(data: bytes) -> list[Publisher]:
    """The distinct publishers of a provenance object's bundles; [] for anything not of that shape."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return []
    bundles = value.get("attestation_bundles") if isinstance(value, dict) else None
    found: list[Publisher] = []
    for bundle in bundles if isinstance(bundles, list) else []:
        publisher = bundle.get("publisher") if isinstance(bundle, dict) else None
        if not isinstance(publisher, dict) or not _is_scalar(publisher.get("kind")):
            continue
        claims = publisher.get("claims")
        pairs = [*publisher.items(), *(claims.items() if isinstance(claims, dict) else ())]
        shown = [(str(name)[:MAX_TEXT], _text(val)) for name, val in pairs if name != "kind" and _is_scalar(val)]
        entry = Publisher(_text(publisher["kind"]), shown[:MAX_CLAIMS])
        if entry not in found:
            found.append(entry)
        if len(found) == MAX_PUBLISHERS:
            break
    return found


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT]


def stored_publishers(store: Blobs, digest: str, cache: PerTip) -> list[Publisher]:
    """``publishers`` of the provenance blob ``digest``, read through the store protocol and kept
    per digest (a blob never changes); [] when the store cannot give it."""
    key = ("provenance", digest)
    if key in cache:
        return cache[key]  # type: ignore[return-value]
    try:
        found = publishers(store.read_bytes(digest))
    except (OSError, ValueError):
        return []
    cache.remember(key, found)
    return found
