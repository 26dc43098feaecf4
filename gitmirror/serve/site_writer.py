"""Writing projects' pages and file links into a static site, in this process or in several.

``render`` decides which projects to write; this module writes them: each project's two pages,
replaced atomically and only when their bytes differ, and its ``files/`` folder made to hold
exactly the offered files. A render of many projects runs in one process per core, each on its
own repository and store handles, because writing pages is CPU-bound Python (parsing manifests,
building pages) that one interpreter runs on one core.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from ..model.manifest import ProjectManifest, blobs_of, loads, manifest_path
from ..storage.blobs import Blobs, open_location
from ..storage.metadata import materialize
from ..storage.repo import MetadataRepo, RepoError
from ..storage.s3store import S3Store
from . import index
from .bucket_files import place_from_bucket

#: projects per task of a render in several processes
CHUNK = 500
#: fewer projects are written in this process: starting the others would cost more than they save
IN_PROCESSES_FROM = 5000


class RenderError(RepoError):
    """A render that cannot proceed (bad option, unusable output); one line for the user."""


@dataclass
class Written:
    """What writing some projects did: the projects written (in name order), pages and links
    written, blobs missing from the store and the projects that lack one."""

    rendered: list[str] = field(default_factory=list)
    pages: int = 0
    links: int = 0
    missing: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    def add(self, other: Written) -> None:
        self.rendered += other.rendered
        self.pages += other.pages
        self.links += other.links
        self.missing += other.missing
        self.incomplete += other.incomplete


@dataclass(frozen=True)
class Site:
    """Where and how projects are written: the output directory, the file URL prefix, the files mode."""

    out: Path
    base: str
    files_mode: str


def project_pages(manifest: ProjectManifest, base: str) -> dict[str, bytes]:
    prefix = f"simple/{manifest.name}/"
    return {
        prefix + "index.html": index.project_html(manifest, base),
        prefix + "index.json": index.project_json(manifest, base),
    }


def write_projects(repo: MetadataRepo, store: Blobs, site: Site, blobs: dict[str, bytes]) -> Written:
    """Write every project of ``blobs`` (name to manifest blob id), in name order; in one process per
    core when there are enough of them."""
    items = sorted(blobs.items())
    chunks = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
    processes = min(os.cpu_count() or 1, len(chunks)) if len(items) >= IN_PROCESSES_FROM else 1
    if processes < 2:
        return _write(repo, store, site, items)
    written = Written()
    settings = (str(repo.path), store.location, site)
    # spawned, not forked: the parent's open pack files must not share offsets with its children
    with ProcessPoolExecutor(processes, get_context("spawn"), initializer=_open, initargs=settings) as pool:
        for part in pool.map(_write_chunk, chunks):
            written.add(part)
    return written


_opened: tuple[MetadataRepo, Blobs, Site] | None = None


def _open(repo_path: str, store_location: str, site: Site) -> None:
    """A render process's own repository and store, opened once."""
    global _opened
    _opened = (MetadataRepo(Path(repo_path)), open_location(store_location), site)


def _write_chunk(items: list[tuple[str, bytes]]) -> Written:
    assert _opened is not None, "started without _open"
    return _write(*_opened, items)


def _write(repo: MetadataRepo, store: Blobs, site: Site, items: Iterable[tuple[str, bytes]]) -> Written:
    written = Written()
    for name, blob_id in items:
        manifest = read_manifest(repo, name, blob_id)
        for page, data in project_pages(manifest, site.base).items():
            written.pages += write_if_changed(site.out / page, data)
        if site.files_mode != "none":
            missing, links = _link_files(manifest, store, site.out / "files" / name, site.files_mode)
            written.links += links
            if missing:
                written.incomplete.append(name)
                written.missing += missing
        written.rendered.append(name)
    return written


def read_manifest(repo: MetadataRepo, name: str, blob_id: bytes) -> ProjectManifest:
    """The manifest of ``name`` by its blob id (from one tree walk), not by path: no tree is parsed twice."""
    path = manifest_path(name)
    return loads(repo.blob(blob_id, path), path)


def write_if_changed(path: Path, data: bytes) -> int:
    """Atomically replace ``path`` when its bytes differ; untouched pages keep their mtime (and caches)."""
    try:
        if path.read_bytes() == data:
            return 0
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".render-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return 1


def _link_files(manifest: ProjectManifest, store: Blobs, folder: Path, mode: str) -> tuple[list[str], int]:
    """Make ``folder`` hold exactly the offered files of ``manifest`` (none while it is quarantined);
    returns the ones with no blob and the number of links written."""
    wanted = {blob.filename: blob for entry in index.offered_files(manifest) for blob in blobs_of(manifest.name, entry)}
    folder.mkdir(parents=True, exist_ok=True)
    for present in sorted(os.listdir(folder)):
        if present not in wanted:
            (folder / present).unlink()
    missing, links = [], 0
    for filename, needed in sorted(wanted.items()):
        target = folder / filename
        local = store.local_file(needed.sha256)
        stored = os.path.isfile(local) if local else store.has(needed.sha256)
        if not stored and not materialize(store, needed):  # a PEP 658 file in its wheel is written out
            missing.append(needed.label)
            if os.path.lexists(target):
                target.unlink()  # a dangling link would answer 500s instead of 404s
            continue
        if isinstance(store, S3Store):
            links += place_from_bucket(store, needed.sha256, manifest.name, target, mode)
            continue
        blob = Path(store.local_file(needed.sha256) or "")
        if _is_current(target, blob, mode, folder):
            continue
        _place(target, blob, mode, folder)
        links += 1
    return missing, links


def _relative_target(blob: Path, folder: Path) -> str:
    return os.path.relpath(blob.resolve(), folder.resolve())


def _is_current(target: Path, blob: Path, mode: str, folder: Path) -> bool:
    if not os.path.lexists(target):
        return False
    if mode == "symlink":
        return target.is_symlink() and os.readlink(target) == _relative_target(blob, folder)
    if target.is_symlink():
        return False
    if mode == "hardlink":
        return os.path.samefile(target, blob)
    # A filename always names the same bytes in one mirror (settings include the store path).
    return target.stat().st_size == blob.stat().st_size


def _place(target: Path, blob: Path, mode: str, folder: Path) -> None:
    tmp = folder / f".render-{target.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        if mode == "symlink":
            os.symlink(_relative_target(blob, folder), tmp)
        elif mode == "hardlink":
            try:
                os.link(blob, tmp)
            except OSError as exc:
                raise RenderError(
                    f"cannot hard-link {blob} into {folder} ({exc.strerror}); use --files symlink or copy"
                ) from None
        else:
            shutil.copyfile(blob, tmp)
            os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
