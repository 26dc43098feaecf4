"""A sync run's downloads: each release file stored at most once per run, with its PEP 658 file.

The walk, the closure and the merge may all ask for the same file; they share one download (and
its failure), so upstream is asked once and every writer is done before the run commits.
"""

from __future__ import annotations

import asyncio
import sys

from ..model.page import RemoteFile, UpstreamError
from ..storage.blobs import Blobs
from ..storage.metadata import WheelMetadata, in_wheel
from ..upstream.upstream import Upstream
from .progress import Progress

#: (file stored, its PEP 658 file stored, errors)
Fetched = tuple[bool, bool, list[str]]


class RunDownloads:
    """The store's downloads of one run, keyed by sha256."""

    def __init__(self, store: Blobs, progress: Progress) -> None:
        self.store = store
        self.progress = progress
        self.metadata_stash: dict[str, bytes] = {}  # PEP 658 files read while choosing, by sha256
        self.tasks: dict[str, asyncio.Future[WheelMetadata | None]] = {}
        self.stored_sizes: dict[str, int] = {}  # blobs this run stored, by sha256: no stat to record them

    def size(self, sha256: str) -> int:
        """The stored blob's size: as this run stored it, else from the file system."""
        size = self.stored_sizes.get(sha256)
        return size if size is not None else self.store.size(sha256)

    async def wait_all(self) -> None:
        """Every download started is over (none may outlive the upstream client); failures stay with their files."""
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def start(self, upstream: Upstream, remote_file: RemoteFile) -> asyncio.Future[WheelMetadata | None]:
        """Download a release file into the store once per run, whichever asks first (the walk, the
        closure or the merge); a failure is shared too, so a lying upstream is asked once."""
        task = self.tasks.get(remote_file.sha256)
        if task is None:
            task = self.tasks[remote_file.sha256] = asyncio.ensure_future(self._download(upstream, remote_file))
            # a failure is reported with the file (``fetch``); a download nobody awaited is not an error
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return task

    async def _download(self, upstream: Upstream, remote_file: RemoteFile) -> WheelMetadata | None:
        """Store the file; a wheel's core metadata is read as it is stored (None: nothing read)."""
        if self.store.has(remote_file.sha256):
            return None
        sys.audit("gitmirror.crashpoint", "sync.download-start")
        self.progress.files_queued(1, remote_file.size or 0)
        try:
            wheel = None
            if remote_file.filename.endswith(".whl"):
                stored, wheel = await upstream.store_wheel(self.store, remote_file)
            else:
                stored = await upstream.store_file(
                    self.store, remote_file.url, remote_file.sha256, remote_file.size, remote_file.filename
                )
            self.progress.advance(stored)
            self.stored_sizes[remote_file.sha256] = stored
            return wheel
        finally:
            self.progress.file_done()

    def finished(self, remote_file: RemoteFile) -> Fetched | None:
        """``fetch``'s answer where nothing is left to wait for (None: ask ``fetch``): the file's
        download is over and there is no PEP 658 file to store apart from it.

        Most files get here done (the walk waits for the wheels it reads): no task per file.
        """
        task = self.tasks.get(remote_file.sha256)
        if task is None or not task.done() or task.cancelled():
            return None
        failure = task.exception()
        if failure is not None:
            return (False, False, [str(failure)]) if isinstance(failure, UpstreamError) else None
        return self._settled(remote_file, task.result())

    def _settled(self, remote_file: RemoteFile, wheel: WheelMetadata | None) -> Fetched | None:
        """A stored file's outcome when its PEP 658 file needs no work of its own: upstream offers
        none, or it is the METADATA of the wheel this run stored (stored with it: ``read_stored_wheel``).
        None: it does (a wheel stored before this run is read in ``fetch``)."""
        has_metadata = bool(remote_file.core_metadata and remote_file.metadata_url)
        if has_metadata and (wheel is None or not wheel.serves_pep658):
            return None
        sys.audit("gitmirror.crashpoint", "sync.file-stored")
        return True, has_metadata, []

    async def fetch(self, upstream: Upstream, remote_file: RemoteFile) -> Fetched:
        """Download a file and its core metadata; returns (file ok, metadata ok, errors)."""
        try:
            wheel = await asyncio.shield(self.start(upstream, remote_file))
        except UpstreamError as exc:
            return False, False, [str(exc)]
        settled = self._settled(remote_file, wheel)
        if settled is not None:
            return settled
        assert remote_file.core_metadata and remote_file.metadata_url
        # stored already (a proxy's client asks for it before its wheel), else maybe inside the stored wheel
        if self.store.has(remote_file.core_metadata) or (wheel is None and await self._from_stored_wheel(remote_file)):
            sys.audit("gitmirror.crashpoint", "sync.file-stored")
            return True, True, []
        errors: list[str] = []
        has_metadata = False
        try:
            stashed = self.metadata_stash.get(remote_file.core_metadata)
            if stashed is not None and not self.store.has(remote_file.core_metadata):
                # create, fsync and rename off the event loop: the other downloads keep streaming
                await asyncio.to_thread(self.store.put_bytes, stashed, remote_file.core_metadata)
            if not self.store.has(remote_file.core_metadata):
                await upstream.store_file(
                    self.store,
                    remote_file.metadata_url,
                    remote_file.core_metadata,
                    None,
                    remote_file.filename + ".metadata",
                )
            has_metadata = True
        except UpstreamError as exc:
            errors.append(str(exc))
        sys.audit("gitmirror.crashpoint", "sync.file-stored")
        return True, has_metadata, errors

    async def _from_stored_wheel(self, remote_file: RemoteFile) -> bool:
        """Whether upstream's PEP 658 file is the METADATA of a wheel stored before this run: then
        its blob is written from the wheel, with no download."""
        if not remote_file.filename.endswith(".whl") or remote_file.core_metadata is None:
            return False
        data = await asyncio.to_thread(in_wheel, self.store, remote_file.core_metadata, remote_file.sha256)
        if data is None:
            return False
        await asyncio.to_thread(self.store.put_bytes, data, remote_file.core_metadata)
        return True
