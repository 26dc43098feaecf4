"""Filling a blob store from another mirror: ``hydrate`` after a ``git clone``, ``export-store`` for sneakernet.

The metadata repository travels by git (clone, fetch, bundle); the blobs it references travel
here. Whatever the source, a blob reaches the store only through ``BlobStore.writer``, which checks
the sha256 (and size) the manifest recorded: a source (``gitmirror.serve.hydrate_sources``) can
withhold a blob, never substitute one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..model.manifest import NeededBlob, blobs_needed_by
from ..model.takedowns import Lookup, repo_reader
from ..storage.blobs import Blobs
from ..storage.metadata import in_wheel, materialize
from ..storage.repo import DEFAULT_BRANCH, MetadataRepo
from ..storage.store import BlobStore, IntegrityError
from .hydrate_sources import CHUNK, BlobUnavailable, Source, SourceError

Log = Callable[[str], None]
EXIT_OK, EXIT_INCOMPLETE = 0, 1


def needed_blobs(repo: MetadataRepo, commit: bytes | None) -> dict[str, NeededBlob]:
    """Every blob the served files of ``commit`` need, by sha256, in a stable (label) order."""
    needed = blobs_needed_by(repo.manifests(commit))
    return dict(sorted(needed.items(), key=lambda item: item[1].label))


# -- hydrate -----------------------------------------------------------------------------------


@dataclass
class HydrateResult:
    needed: int = 0
    present: int = 0
    fetched: int = 0
    bytes_fetched: int = 0
    in_wheels: int = 0  # PEP 658 files written out of their wheels once those are stored
    missing: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_INCOMPLETE if self.missing or self.refused else EXIT_OK

    def summary(self) -> str:
        text = (
            f"{self.needed} blobs needed: {self.present} already present, "
            f"{self.fetched} fetched ({self.bytes_fetched} bytes)"
        )
        if self.in_wheels:
            text += f", {self.in_wheels} written out of their wheels"
        if self.missing:
            text += f", {len(self.missing)} missing at the source"
        if self.refused:
            text += f", {len(self.refused)} REFUSED (failed verification)"
        return text


def hydrate(
    repo: MetadataRepo,
    store: Blobs,
    commit: bytes | None,
    source: Source,
    log: Log = print,
    tip: bytes | None = None,
) -> HydrateResult:
    """Fetch every blob ``commit`` needs and ``store`` lacks; report what could not be had.

    Blobs taken down as of ``tip`` (default: the tip of ``main``) are never fetched, even when the
    older ``commit`` still served them (``without_taken_down``).
    """
    store.init()
    store.clean_tmp()
    needed = without_taken_down(repo, tip or repo.tip(DEFAULT_BRANCH), needed_blobs(repo, commit), log)
    result = HydrateResult(needed=len(needed))
    wanted = [blob for blob in needed.values() if not store.has(blob.sha256)]
    result.present = result.needed - len(wanted)
    asyncio.run(_hydrate_all(wanted, store, source, result, log))
    return result


def without_taken_down(
    repo: MetadataRepo, tip: bytes | None, needed: dict[str, NeededBlob], log: Log
) -> dict[str, NeededBlob]:
    """``needed`` minus the blobs whose sha256 (or, for a PEP 658 file, whose wheel's) the takedown
    index at ``tip`` lists: their bytes were deleted on purpose and must not come back. A blob a
    file served at ``tip`` still needs stays (``takedown`` keeps such a blob too)."""
    lookup = Lookup([repo_reader(repo, tip)])
    listed = {
        digest: record
        for digest, blob in needed.items()
        if (record := lookup.record(digest) or (lookup.record(blob.wheel) if blob.wheel else None))
    }
    served_at_tip = needed_blobs(repo, tip) if listed else {}
    for digest, record in listed.items():
        if digest not in served_at_tip:
            blob = needed.pop(digest)
            log(f"skipped {blob.label} ({digest[:12]}): taken down as {record.project}/{record.filename}")
    return needed


async def _hydrate_all(wanted: list[NeededBlob], store: Blobs, source: Source, result: HydrateResult, log: Log) -> None:
    # PEP 658 files are written out of their wheels where they can be: fetched after the wheels, if at all
    try:
        await asyncio.gather(*(_hydrate_one(blob, store, source, result, log) for blob in wanted if not blob.wheel))
        in_wheels = [blob for blob in wanted if blob.wheel]
        kept = await asyncio.to_thread(lambda: [materialize(store, blob) for blob in in_wheels])
        result.in_wheels = sum(kept)
        rest = [blob for blob, done in zip(in_wheels, kept, strict=True) if not done]
        await asyncio.gather(*(_hydrate_one(blob, store, source, result, log) for blob in rest))
    finally:
        await source.close()


async def _hydrate_one(blob: NeededBlob, store: Blobs, source: Source, result: HydrateResult, log: Log) -> None:
    try:
        writer = await source.fetch(blob, lambda: store.writer(blob.sha256, blob.size))
        writer.commit()  # checks sha256 and size; a wrong blob is deleted, never made visible
    except BlobUnavailable as exc:
        result.missing.append(f"{blob.label}: {exc}")
        log(f"missing {blob.label} ({blob.sha256[:12]}): {exc}")
        return
    except IntegrityError as exc:
        result.refused.append(f"{blob.label}: {exc}")
        log(f"REFUSED {blob.label}: {exc}; not stored")
        return
    result.fetched += 1
    result.bytes_fetched += writer.size


# -- export-store ------------------------------------------------------------------------------


@dataclass
class ExportResult:
    needed: int = 0
    written: int = 0
    present: int = 0
    skipped: int = 0
    bytes_written: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_INCOMPLETE if self.missing else EXIT_OK

    def summary(self) -> str:
        text = (
            f"{self.needed} blobs needed: {self.written} written ({self.bytes_written} bytes), "
            f"{self.present} already in the export"
        )
        if self.skipped:
            text += f", {self.skipped} left out (already in the --since snapshot)"
        if self.missing:
            text += f", {len(self.missing)} MISSING or damaged in the local store"
        return text


def export_store(
    repo: MetadataRepo,
    store: Blobs,
    commit: bytes,
    out: Path,
    since: bytes | None = None,
    log: Log = print,
) -> ExportResult:
    """Write the blobs of one snapshot (minus those of ``since``) to ``out`` in the store layout.

    Each blob is re-verified on the way out, so a damaged local copy is reported, not exported.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SourceError(f"{out} exists and is not a directory")
    target = BlobStore(out)
    target.init()
    needed = needed_blobs(repo, commit)
    result = ExportResult(needed=len(needed))
    if since is not None:
        earlier = needed_blobs(repo, since)
        result.skipped = sum(1 for sha in needed if sha in earlier)
        needed = {sha: blob for sha, blob in needed.items() if sha not in earlier}
    for blob in needed.values():
        if target.has(blob.sha256):
            result.present += 1
            continue
        kept_in_wheel = None if store.has(blob.sha256) else in_wheel(store, blob.sha256, blob.wheel)
        if kept_in_wheel is not None:  # an exported store is read by other tools: the file is written out
            target.put_bytes(kept_in_wheel, blob.sha256)
            result.written += 1
            result.bytes_written += len(kept_in_wheel)
            continue
        try:
            with store.open(blob.sha256) as handle, target.writer(blob.sha256, blob.size) as writer:
                while chunk := handle.read(CHUNK):
                    writer.write(chunk)
                writer.commit()
        except FileNotFoundError:
            result.missing.append(f"{blob.label}: not in the local store")
            log(f"missing {blob.label} ({blob.sha256[:12]}): not in the local store")
            continue
        except IntegrityError as exc:
            result.missing.append(f"{blob.label}: damaged in the local store ({exc})")
            log(f"DAMAGED {blob.label}: {exc}; not exported")
            continue
        result.written += 1
        result.bytes_written += writer.size
    if target.tmp_dir.is_dir() and not any(target.tmp_dir.iterdir()):
        os.rmdir(target.tmp_dir)
    return result
