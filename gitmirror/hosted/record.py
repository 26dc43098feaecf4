"""Recording an upload exactly as a sync records a mirrored file: blob, manifest line, one commit.

Under the writer lock: the filename is looked up at the branch tip (a filename once recorded keeps
its bytes forever: the same bytes again change nothing, other bytes are refused, and so is another
spelling of a file still served, ``same_distribution``), the takedown
index is asked (taken-down bytes never come back, under any name), then the blob and its PEP 658
file are published in the store before the commit that names them, and the manifest change passes
the immutability policy like every other writer's. The commit names the token that uploaded.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO

from ..model.hosted import HostedSettings, with_pep708
from ..model.manifest import FileEntry, ProjectManifest, manifest_path, now
from ..model.policy import check
from ..model.takedowns import takedown_reason
from ..storage.repo import MetadataRepo, RepoError
from ..storage.store import BlobStore
from .upload import UploadForm, UploadRefused, bad, same_distribution

#: how long an upload waits for another writer (a sync) to finish before answering 503
LOCK_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Received:
    """An upload whose form and bytes were checked (``upload.check_form``, ``check_file``)."""

    form: UploadForm
    content: IO[bytes]
    size: int
    metadata: bytes | None  # the wheel's METADATA: its PEP 658 file
    requires_python: str | None
    uploader: str  # the token's name
    provenance: bytes | None = None  # PEP 740, built from the upload's attestations (``model.provenance``)


def record(repo: MetadataRepo, store: BlobStore, branch: str, settings: HostedSettings, upload: Received) -> str:
    """Record ``upload`` on ``branch``; returns the line to answer with (200), or raises ``UploadRefused``."""
    form = upload.form
    with ExitStack() as stack:
        _wait_for_lock(stack, repo)
        parent = repo.tip(branch)
        old = repo.manifest(parent, form.project)
        recorded = old.files.get(form.filename) if old else None
        if recorded is not None:
            if recorded.tombstone is not None:
                raise bad(f"{form.filename} was taken down; a filename is never reused")
            if recorded.sha256 == form.sha256:
                return f"{form.filename} was uploaded before with these bytes: nothing changed"
            raise bad(f"{form.filename} already exists with other bytes; a filename is never reused")
        offered = [name for name, entry in old.files.items() if entry.tombstone is None] if old else []
        same = next((name for name in offered if same_distribution(form.filename, name)), None)
        if same is not None:
            raise bad(
                f"{form.filename} is the same distribution as {same}, recorded before: "
                "upload a new version (or a wheel with a build tag)"
            )
        reason = takedown_reason(repo, parent, form.sha256)
        if reason is not None:
            raise bad(f"{form.filename}: these bytes were taken down ({reason}); they are never served again")
        core = store.put_bytes(upload.metadata) if upload.metadata is not None else None
        provenance = store.put_bytes(upload.provenance) if upload.provenance is not None else None
        _store_blob(store, upload)
        moment = now()
        entry = FileEntry(
            filename=form.filename,
            version=form.version,
            sha256=form.sha256,
            size=upload.size,
            requires_python=upload.requires_python,
            upload_time=moment,
            core_metadata=core,
            first_seen=moment,
            provenance=provenance,
        )
        manifest = with_pep708((old or ProjectManifest(name=form.project)).with_file(entry), settings)
        path = manifest_path(form.project)
        violations = check(old, manifest, path)
        if violations:  # never expected: the lookups above are the rule's own cases
            raise bad("; ".join(map(str, violations)))
        body = f"{form.project}: + {form.filename}\nuploaded-by: {upload.uploader}\n"
        message = f"upload: {form.project} {form.version}\n\n{body}"
        commit = repo.write_commit({path: manifest.dumps()}, message, branch=branch, parent=parent)
        return f"uploaded {form.filename} (commit {commit.decode()[:12]})"
    raise AssertionError("unreachable")


def _wait_for_lock(stack: ExitStack, repo: MetadataRepo) -> None:
    """Take the writer lock, waiting up to ``LOCK_WAIT_SECONDS`` for a sync or another upload."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            stack.enter_context(repo.writer_lock())
            return
        except RepoError as exc:
            if time.monotonic() > deadline:
                raise UploadRefused(503, f"{exc}") from None
            time.sleep(0.2)


def _store_blob(store: BlobStore, upload: Received) -> None:
    """Stream the checked file into the store (verified again while written: it is what was hashed)."""
    content = upload.content
    content.seek(0)
    with store.writer(upload.form.sha256, upload.size) as writer:
        while chunk := content.read(1 << 20):
            writer.write(chunk)
        writer.commit()
