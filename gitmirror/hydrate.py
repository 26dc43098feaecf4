"""Filling a blob store from another mirror: ``hydrate`` after a ``git clone``, ``export-store`` for sneakernet.

The metadata repository travels by git (clone, fetch, bundle); the blobs it references travel
here. Whatever the source, a blob reaches the store only through ``BlobStore.writer``, which checks
the sha256 (and size) the manifest recorded: a source can withhold a blob, never substitute one.
Nor can it hold the run: a directory's blob paths are opened without following symlinks and only
regular files are read (a FIFO would block, a device never end); an HTTP source gets the byte caps
and deadline of a sync (``limits.Limits``).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from .hosts import HostPolicy
from .limits import Limits
from .manifest import NeededBlob, blobs_needed_by
from .metadata import in_wheel, materialize
from .repo import DEFAULT_BRANCH, MetadataRepo, RepoError
from .store import BlobStore, BlobWriter, IntegrityError
from .takedowns import Lookup, repo_reader
from .tls import USER_AGENT
from .transport import FetchError, TooLarge, Transient, Transport, with_retries

Log = Callable[[str], None]
OpenWriter = Callable[[], BlobWriter]
CHUNK = 1 << 20
EXIT_OK, EXIT_INCOMPLETE = 0, 1


class SourceError(RepoError):
    """SOURCE is not something blobs can be read from; one line for the user."""


class BlobUnavailable(Exception):
    """The source does not have this blob (or could not be reached for it)."""


class SourceRefused(IntegrityError):
    """The source offers something that is not a plain file under the blob's name, or more bytes
    than the blob may have: not read (further), nothing stored."""


def needed_blobs(repo: MetadataRepo, commit: bytes | None) -> dict[str, NeededBlob]:
    """Every blob the served files of ``commit`` need, by sha256, in a stable (label) order."""
    needed = blobs_needed_by(repo.manifests(commit))
    return dict(sorted(needed.items(), key=lambda item: item[1].label))


# -- sources -----------------------------------------------------------------------------------


class DirectorySource:
    """A directory holding a store layout (``blobs/aa/bb/<sha256>``): a store, a disk, an export.

    Each blob path is walked from the source's root one component at a time, none of them a
    symlink, and the blob itself must be a regular file: a symlink could lead out of the source, a
    FIFO would block the run and a device would never end.
    """

    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.store = BlobStore(root)
        self.limits = limits or Limits()

    def __str__(self) -> str:
        return str(self.store.root)

    async def fetch(self, blob: NeededBlob, open_writer: OpenWriter) -> BlobWriter:
        handle = self._open(blob)
        cap = self.limits.cap(blob.filename, blob.size)
        try:
            if os.fstat(handle).st_size > cap:
                raise SourceRefused(self.limits.too_large(blob.filename, blob.size))
            writer = open_writer()
            try:
                while chunk := _read(handle):
                    if writer.size + len(chunk) > cap:  # grown since: still not more than the cap
                        raise SourceRefused(self.limits.too_large(blob.filename, blob.size))
                    writer.write(chunk)
            except BaseException:
                writer.abort()
                raise
        finally:
            os.close(handle)
        return writer

    def _open(self, blob: NeededBlob) -> int:
        """The blob's file descriptor, opened component by component without following a symlink."""
        parts = os.path.relpath(self.store.file(blob.sha256), self.store.root).split(os.sep)
        try:
            current = os.open(self.store.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BlobUnavailable(f"unreadable in the source ({exc.strerror})") from None
        try:
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                where = "/".join(parts[: depth + 1])
                try:
                    mode = os.stat(part, dir_fd=current, follow_symlinks=False).st_mode
                    _check_kind(mode, last, where)
                    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                    opened = os.open(part, flags | (0 if last else os.O_DIRECTORY), dir_fd=current)
                except FileNotFoundError:
                    raise BlobUnavailable("not in the source store") from None
                except OSError as exc:  # ELOOP, ENOTDIR: replaced by a symlink or another kind meanwhile
                    raise BlobUnavailable(f"unreadable in the source ({where}: {exc.strerror})") from None
                os.close(current)
                current = opened
            _check_kind(os.fstat(current).st_mode, True, "/".join(parts))
        except BaseException:
            os.close(current)
            raise
        return current

    async def close(self) -> None:
        return None


def _read(handle: int) -> bytes:
    try:
        return os.read(handle, CHUNK)
    except OSError as exc:
        raise BlobUnavailable(f"unreadable in the source ({exc.strerror})") from None


# ``stat.filemode``'s first letter: the kind of a file
_KINDS = {"l": "a symlink", "p": "a FIFO", "c": "a character device", "b": "a block device", "s": "a socket"}


def _check_kind(mode: int, last: bool, where: str) -> None:
    """Refuse a path component that is not a directory (``last``: not a regular file)."""
    if (stat.S_ISREG if last else stat.S_ISDIR)(mode):
        return
    kind = _KINDS.get(stat.filemode(mode)[0], "a directory" if stat.S_ISDIR(mode) else "a regular file")
    wanted = "a regular file" if last else "a directory"
    raise SourceRefused(f"{where} in the source is {kind}, not {wanted}: not read")


class ServerSource:
    """Another gitmirror (or a static render of one): blobs are at ``<base>files/<project>/<filename>``.

    Fetched through the sync's transport (``transport.Transport``): the system trust store, the host
    policy (the source's own origin, plus ``allowed_hosts``), proxies from the environment, and a
    sync's bounds: a body past the manifest's size (or past the cap for its kind) is refused, an
    attempt past its deadline is abandoned (``limits.Limits``).
    """

    def __init__(
        self,
        base_url: str,
        concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 2,
        limits: Limits | None = None,
        allowed_hosts: tuple[str, ...] | None = None,
    ) -> None:
        self.base_url = base_url
        self.retries = retries
        self._concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self._transport = Transport(
            HostPolicy(base_url, allowed_hosts),
            timeout,
            limits,
            connections=concurrency,
            user_agent=f"{USER_AGENT} hydrate",
            peer="source",
        )

    def __str__(self) -> str:
        return self.base_url

    def url_of(self, blob: NeededBlob) -> str:
        return f"{self.base_url}files/{quote(blob.project)}/{quote(blob.filename)}"

    async def fetch(self, blob: NeededBlob, open_writer: OpenWriter) -> BlobWriter:
        """Stream the blob into a fresh writer per attempt (a partial body never mixes with a retry)."""
        url = self.url_of(blob)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        slots = self._slots

        async def attempt() -> BlobWriter:
            writer = open_writer()
            try:
                async with slots:
                    await asyncio.to_thread(self._transport.fetch, url, writer)
            except BaseException:
                writer.abort()
                raise
            return writer

        try:
            return await with_retries(attempt, self.retries, backoff=0.5)
        except Transient as exc:
            raise BlobUnavailable(f"source {exc.reason}") from None
        except TooLarge as exc:
            raise SourceRefused(str(exc)) from None
        except FetchError as exc:
            raise BlobUnavailable(str(exc)) from None

    async def close(self) -> None:
        await asyncio.to_thread(self._transport.close)


Source = DirectorySource | ServerSource


def open_source(
    text: str, concurrency: int = 8, limits: Limits | None = None, allowed_hosts: tuple[str, ...] | None = None
) -> Source:
    """SOURCE as given on the command line: an http(s) URL of a mirror, or a directory with a store."""
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise SourceError(f"invalid source URL {text!r}")
        base = text if text.endswith("/") else text + "/"
        if base.endswith("/simple/"):  # people paste the index URL; files live beside it
            base = base[: -len("simple/")]
        return ServerSource(base, concurrency=concurrency, limits=limits, allowed_hosts=allowed_hosts)
    if parts.scheme == "file":
        text = parts.path
    elif parts.scheme and len(parts.scheme) > 1:
        raise SourceError(f"unsupported source {text!r}: give an http(s) URL or a directory")
    root = Path(text)
    for candidate in (root, root / "store", root / "mirror" / "store"):
        if (candidate / "blobs").is_dir():
            return DirectorySource(candidate, limits)
    raise SourceError(f"{text} holds no blob store (no blobs/ directory in it, its store/ or mirror/store/)")


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
    store: BlobStore,
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


async def _hydrate_all(
    wanted: list[NeededBlob], store: BlobStore, source: Source, result: HydrateResult, log: Log
) -> None:
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


async def _hydrate_one(blob: NeededBlob, store: BlobStore, source: Source, result: HydrateResult, log: Log) -> None:
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
    store: BlobStore,
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
        path = store.path(blob.sha256)
        kept_in_wheel = None if path.is_file() else in_wheel(store, blob.sha256, blob.wheel)
        if kept_in_wheel is not None:  # an exported store is read by other tools: the file is written out
            target.put_bytes(kept_in_wheel, blob.sha256)
            result.written += 1
            result.bytes_written += len(kept_in_wheel)
            continue
        try:
            with path.open("rb") as handle, target.writer(blob.sha256, blob.size) as writer:
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
