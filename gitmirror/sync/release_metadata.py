"""The core metadata of a release, for the closure walk: from the store, a wheel the sync stores
anyway, the PEP 658 file, or the wheel itself - each checked against its announced sha256.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO

from ..model.page import RemoteFile, UpstreamError
from ..storage import metadata as core_metadata
from ..storage.blobs import Blobs
from ..storage.store import AnnouncedBody
from ..upstream.upstream import Upstream
from .state import METADATA_FILE, WHEEL, LocalState

#: stores a project's wheel in the blob store and reads its core metadata; None when it may not be stored
StoreFile = Callable[[str, RemoteFile], Awaitable["core_metadata.WheelMetadata | None"]]


class MemoryWriter(AnnouncedBody):
    """A ``BlobWriter`` look-alike for ``gitmirror plan``: verifies the hash, keeps bytes off the store."""

    def __init__(self, expected_sha256: str, expected_size: int | None) -> None:
        super().__init__(expected_sha256, expected_size)
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        self.received(chunk)
        self.file.write(chunk)

    def commit(self) -> None:
        self.check_announced()
        self.file.seek(0)

    def abort(self) -> None:
        pass


class MetadataSource:
    """Core metadata of a release; ``persist`` keeps what it downloads in the store (sync) or not (plan).

    A sync that will store a release's wheel anyway reads the metadata out of it instead of asking
    for the PEP 658 file: one request per release instead of two, and the download starts while the
    closure is still being walked. PEP 658 requires the two to be the same bytes, and the announced
    sha256 is checked, so the ``.metadata`` file the mirror serves is still exactly upstream's.
    """

    def __init__(
        self,
        upstream: Upstream,
        store: Blobs,
        persist: bool,
        stash: dict[str, bytes] | None = None,
        store_file: StoreFile | None = None,
        *,
        cache: LocalState,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.persist = persist
        #: verified PEP 658 files by sha256: sync stores them only with their release file
        self.stash: dict[str, bytes] = {} if stash is None else stash
        #: the sync's own download of a release file (once per run); False when it may not store it
        self.store_file = store_file if persist else None
        self._tasks: dict[tuple[str, str], asyncio.Task[core_metadata.CoreMetadata | None]] = {}
        #: what earlier runs parsed out of the stored blobs (``state``): read once per blob
        self.cache = cache

    async def get(
        self, project: str, version: str, files: list[RemoteFile], chosen: set[str]
    ) -> core_metadata.CoreMetadata | None:
        key = (project, version)
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(self._read(project, files, chosen))
        return await asyncio.shield(task)

    async def _read(self, project: str, files: list[RemoteFile], chosen: set[str]) -> core_metadata.CoreMetadata | None:
        ordered = sorted(files, key=lambda item: (item.filename not in chosen, item.size or 0))
        for remote_file in ordered:  # offline first: what earlier runs stored
            if remote_file.core_metadata and self.store.has(remote_file.core_metadata):
                known = self.cache.metadata(METADATA_FILE, remote_file.core_metadata)
                if known is not None:
                    return known
                parsed = core_metadata.parse(self.store.read_bytes(remote_file.core_metadata))
                return self._learn(METADATA_FILE, remote_file.core_metadata, parsed)
            if remote_file.filename.endswith(".whl") and self.store.has(remote_file.sha256):
                known = self.cache.metadata(WHEEL, remote_file.sha256)
                if known is not None:
                    return known
                data = await asyncio.to_thread(core_metadata.from_stored_wheel, self.store, remote_file.sha256)
                if data is not None:
                    return self._learn(WHEEL, remote_file.sha256, core_metadata.parse(data))
        for remote_file in ordered:  # a wheel this sync stores anyway
            if self.store_file and remote_file.filename in chosen and remote_file.filename.endswith(".whl"):
                try:
                    wheel = await self.store_file(project, remote_file)
                except UpstreamError:
                    break  # the sync reports it with the file; the PEP 658 file may still tell
                if wheel is None or wheel.metadata is None:
                    continue
                self._learn(WHEEL, remote_file.sha256, wheel.metadata)  # what the next run's offline step reads
                if wheel.upstreams:
                    return wheel.metadata
                break  # upstream's PEP 658 file differs from the wheel's: the mirror must serve upstream's
        for remote_file in ordered:  # PEP 658: a few hundred bytes
            if remote_file.core_metadata and remote_file.metadata_url:
                data = self.stash.get(remote_file.core_metadata) or await self._download(
                    remote_file.metadata_url, remote_file.core_metadata, None, remote_file.filename + ".metadata", False
                )
                self.stash[remote_file.core_metadata] = data
                return self._learn(METADATA_FILE, remote_file.core_metadata, core_metadata.parse(data))
        for remote_file in ordered:  # the wheel itself, preferably one the mirror keeps anyway
            if remote_file.filename.endswith(".whl"):
                keep = self.persist and remote_file.filename in chosen
                data = await self._download(remote_file.url, remote_file.sha256, remote_file.size, None, keep)
                wheel_metadata = core_metadata.from_wheel(data) if data else None
                if wheel_metadata is not None:
                    return self._learn(WHEEL, remote_file.sha256, core_metadata.parse(wheel_metadata))
        return None

    def _learn(self, kind: str, sha256: str, parsed: core_metadata.CoreMetadata) -> core_metadata.CoreMetadata:
        """Keep what was parsed out of a blob whose sha256 was checked (the cache's entries are pure
        functions of those bytes); the offline step looks it up only once the blob is stored."""
        self.cache.learn(kind, sha256, parsed)
        return parsed

    async def _download(self, url: str, sha256: str, size: int | None, label: str | None, keep: bool) -> bytes:
        label = label or url.rsplit("/", 1)[-1]
        if keep and self.persist:
            await self.upstream.store_file(self.store, url, sha256, size, label)
            return self.store.read_bytes(sha256)
        writers: list[MemoryWriter] = []

        def open_writer() -> MemoryWriter:
            writers.append(MemoryWriter(sha256, size))
            return writers[-1]

        await self.upstream.download(url, open_writer, label)  # type: ignore[arg-type]
        return writers[-1].file.read()
