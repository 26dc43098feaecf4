"""Where ``hydrate`` reads blobs from: a directory holding a store layout, or another mirror over HTTP.

A source can withhold a blob, never substitute one (the store's writer checks every byte), nor
hold the run: a directory's blob paths are opened without following symlinks and only regular
files are read; an HTTP source gets the byte caps and deadline of a sync (``limits.Limits``).
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..model.hosts import HostPolicy
from ..model.limits import Limits
from ..model.manifest import NeededBlob
from ..storage.blobs import BlobWriting
from ..storage.repo import RepoError
from ..storage.s3client import S3Settings, parse_url
from ..storage.s3store import S3Store
from ..storage.store import BlobStore, IntegrityError
from ..upstream.tls import USER_AGENT
from ..upstream.transport import FetchError, TooLarge, Transient, Transport, with_retries

OpenWriter = Callable[[], BlobWriting]
CHUNK = 1 << 20


class SourceError(RepoError):
    """SOURCE is not something blobs can be read from; one line for the user."""


class BlobUnavailable(Exception):
    """The source does not have this blob (or could not be reached for it)."""


class SourceRefused(IntegrityError):
    """The source offers something that is not a plain file under the blob's name, or more bytes
    than the blob may have: not read (further), nothing stored."""


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

    async def fetch(self, blob: NeededBlob, open_writer: OpenWriter) -> BlobWriting:
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

    async def fetch(self, blob: NeededBlob, open_writer: OpenWriter) -> BlobWriting:
        """Stream the blob into a fresh writer per attempt (a partial body never mixes with a retry)."""
        url = self.url_of(blob)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        slots = self._slots

        async def attempt() -> BlobWriting:
            async with slots:  # a writer holds a temporary file: one per slot, not one per blob
                writer = open_writer()
                try:
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


class BucketSource:
    """A store in a bucket (``s3://BUCKET/PREFIX``), reached with the settings of the mirror's own
    ``s3:`` (endpoint, region, profile); blobs are streamed into the writer with a sync's byte cap."""

    def __init__(self, store: S3Store, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()

    def __str__(self) -> str:
        return self.store.settings.url

    async def fetch(self, blob: NeededBlob, open_writer: OpenWriter) -> BlobWriting:
        return await asyncio.to_thread(self._copy, blob, open_writer)

    def _copy(self, blob: NeededBlob, open_writer: OpenWriter) -> BlobWriting:
        cap = self.limits.cap(blob.filename, blob.size)
        writer = open_writer()
        try:
            for chunk in self.store.chunks(blob.sha256):
                if writer.size + len(chunk) > cap:
                    raise SourceRefused(self.limits.too_large(blob.filename, blob.size))
                writer.write(chunk)
        except FileNotFoundError:
            writer.abort()
            raise BlobUnavailable("not in the source bucket") from None
        except BaseException:
            writer.abort()
            raise
        return writer

    async def close(self) -> None:
        return None


Source = DirectorySource | ServerSource | BucketSource


def open_source(
    text: str,
    concurrency: int = 8,
    limits: Limits | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
    s3: S3Settings | None = None,
) -> Source:
    """SOURCE as given on the command line: an http(s) URL of a mirror, ``s3://BUCKET/PREFIX`` (reached
    with ``s3``'s endpoint and credentials settings, when given), or a directory with a store."""
    parts = urlsplit(text)
    if parts.scheme == "s3":
        try:
            bucket, prefix = parse_url(text)
        except ValueError as exc:
            raise SourceError(f"invalid source: {exc}") from None
        settings = replace(s3, bucket=bucket, prefix=prefix) if s3 is not None else S3Settings(bucket, prefix)
        return BucketSource(S3Store(settings, tempfile.gettempdir()), limits)
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
