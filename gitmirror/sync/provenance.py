"""Mirroring upstream's PEP 740 provenance objects beside their files.

Upstream's page says where each file's provenance object is (``provenance`` in JSON,
``data-provenance`` in HTML). For every served file of the page that has none recorded, the sync
fetches it (the file rules: host policy, retries, deadline; at most ``MAX_PROVENANCE_BYTES``),
checks its form, stores it as a blob named by its sha256 and records that digest in the file's
manifest entry, in the same commit as the file when the file is new. Once recorded it is frozen like
the file (``model.policy``): when the project's page changed, recorded objects are fetched again and
one that upstream now serves with other bytes is a conflict (``<filename>.provenance``), the recorded
one kept. A recorded object whose blob is missing from the store is fetched again and, the same
bytes, stored. A provenance that cannot be had costs one error line, never the file.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import replace

from ..model.manifest import PROVENANCE_SUFFIX, FileEntry, ProjectManifest
from ..model.page import RemoteFile, RemoteProject, UpstreamError
from ..model.provenance import MAX_PROVENANCE_BYTES, ProvenanceError, check_provenance
from ..storage.blobs import Blobs
from ..upstream.upstream import Upstream
from .merge import Conflict, ProjectOutcome


async def mirror_provenance(
    upstream: Upstream,
    store: Blobs,
    manifest: ProjectManifest,
    remote: RemoteProject,
    outcome: ProjectOutcome,
    recheck: bool,
    seen_at: str,
) -> ProjectManifest:
    """``manifest`` with the provenance of its files recorded; errors and conflicts go to ``outcome``.

    ``recheck``: the page is new since the last run, so recorded objects are compared with upstream's.
    """
    asked = [
        (remote_file, entry)
        for remote_file in remote.files
        if remote_file.provenance_url
        and (entry := manifest.files.get(remote_file.filename)) is not None
        and entry.sha256 == remote_file.sha256
        and entry.served
        and (entry.provenance is None or recheck or not store.has(entry.provenance))
    ]
    answers = await asyncio.gather(*(_fetch(upstream, remote_file) for remote_file, _entry in asked))
    recorded: list[FileEntry] = []
    for (_remote_file, entry), data in zip(asked, answers, strict=True):
        if isinstance(data, str):
            outcome.errors.append(data)
            continue
        digest = hashlib.sha256(data).hexdigest()
        if entry.provenance is None:
            await asyncio.to_thread(store.put_bytes, data, digest)
            recorded.append(replace(entry, provenance=digest))
            if entry.filename not in outcome.added:
                outcome.changes.append(f"{entry.filename} provenance recorded")
        elif entry.provenance != digest:
            outcome.conflicts.append(_conflict(store, remote.name, entry, digest, len(data), seen_at))
        elif not store.has(digest):  # the recorded blob went missing: healed from upstream's same bytes
            await asyncio.to_thread(store.put_bytes, data, digest)
    return manifest.with_files(recorded) if recorded else manifest


async def _fetch(upstream: Upstream, remote_file: RemoteFile) -> bytes | str:
    """The checked provenance object, or the one line saying why there is none."""
    label = remote_file.filename + PROVENANCE_SUFFIX
    assert remote_file.provenance_url is not None
    try:
        data = await upstream.document(remote_file.provenance_url, label, MAX_PROVENANCE_BYTES)
        check_provenance(data)
    except UpstreamError as exc:
        return f"{exc} (the file is kept without it)"
    except ProvenanceError as exc:
        return f"{label}: refused, {exc} (the file is kept without it)"
    return data


def _conflict(store: Blobs, project: str, entry: FileEntry, digest: str, size: int, seen_at: str) -> Conflict:
    assert entry.provenance is not None
    try:
        recorded_size = store.size(entry.provenance)
    except FileNotFoundError:
        recorded_size = 0
    return Conflict(
        project=project,
        filename=entry.filename + PROVENANCE_SUFFIX,
        recorded_sha256=entry.provenance,
        recorded_size=recorded_size,
        upstream_sha256=digest,
        upstream_size=size,
        detected=seen_at,
    )


def served_blobs(manifests: Iterable[ProjectManifest]) -> set[str]:
    """The digests of served files and of their provenance objects: what the warm check must find in
    the store (a provenance lost is fetched again by a full run)."""
    return {
        digest
        for manifest in manifests
        for entry in manifest.files.values()  # served_files() would sort them again, after the last download
        if entry.served
        for digest in (entry.sha256, entry.provenance)
        if digest
    }
