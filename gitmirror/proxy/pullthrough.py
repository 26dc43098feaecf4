"""The pull-through proxy: any project on first request, fetched and merged as ``sync`` does.

A page request for a project the proxy has not fetched within ``ttl`` refreshes it: the page comes
through the sync's ``Pages``/``Upstream`` (transport, host policy, retries), the sync's resolver
picks the files ``mirror.yaml``'s filters take, and ``merge`` folds it into the record (conflicts
kept and reported, removals marked). Files the record does not hold yet are *offered*: listed with
upstream's sha256 and size, stored on their first request (``stream``) and recorded then, so a
manifest never names a blob the store lacks. Everything recorded goes to the one writer
(``writer.BatchWriter``), whose uncommitted batch is the record until it commits.

A recorded project past its TTL is served at once as recorded (with the offers already known)
while one refresh runs in the background: only an unrecorded project waits for upstream. Upstream
down or slow: what is recorded is served as it is, marked stale once a refresh failed; an
unrecorded project is an ``Unavailable`` (502/504) with one line of why.

With ``review:`` the proxy records into the review branch and downloads what it records at once
(a reviewer reads it), serves ``main`` only, and after each commit lets review's policy
(``approve --policy``: cooldown, ``auto_approve``, flags) move what it approves onto ``main``.
"""

from __future__ import annotations

import asyncio
import functools
import time
import traceback
from collections.abc import Callable

from packaging.requirements import Requirement

from ..model.decisions import local_decisions, marks_path
from ..model.manifest import FileEntry, ProjectManifest, now
from ..model.page import ProjectNotFound, RemoteFile, UpstreamError
from ..model.policy import CONFLICTS_DIR
from ..model.takedowns import Lookup, repo_reader
from ..storage.blobs import Blobs
from ..storage.repo import MetadataRepo
from ..sync.closure import ProjectChoice, Resolver
from ..sync.config import Config
from ..sync.downloads import RunDownloads
from ..sync.merge import merge, new_entry, recorded_conflicts, removed_upstream
from ..sync.pages import Pages
from ..sync.progress import Progress
from ..sync.roots import Root, Roots
from ..sync.selection import rules_from
from ..upstream.upstream import Upstream
from .answers import BranchReader, Served, Stored, Streaming, Unavailable, Upstreamed
from .batch import Pending
from .singleflight import SingleFlight
from .stream import Downloads
from .writer import BatchWriter

#: the most projects whose upstream page the proxy keeps in memory (clients may ask for any name)
KNOWN_PROJECTS = 50_000

Log = Callable[[str], None]
#: told why a background refresh failed (``timeout``, ``failed`` or ``error``), for ``/metrics``
FailureCount = Callable[[str], None]


class PullThrough:
    """The proxy of one mirror: it records into ``recording``'s branch and serves ``serving``'s
    (both ``main``, or with ``review:`` the review branch and ``main``)."""

    def __init__(
        self,
        config: Config,
        repo: MetadataRepo,
        store: Blobs,
        recording: BranchReader,
        serving: BranchReader,
        log: Log,
        count_failure: FailureCount = lambda reason: None,
    ) -> None:
        assert config.proxy is not None
        self.config = config
        self.settings = config.proxy
        self.repo = repo
        self.store = store
        self.committed = recording.manifest
        self.committed_names = recording.names
        self.serving = serving
        self.review = config.review.enabled
        self.log = log
        self.count_failure = count_failure
        self.rules = rules_from(config)
        self.writer = BatchWriter(config, repo, store, log)
        self.known: dict[str, Upstreamed] = {}
        self.refreshes: SingleFlight[str, None] = SingleFlight()
        self.downloads: Downloads | None = None
        self._upstream: Upstream | None = None
        self._writing: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.store.init()
        self._upstream = self.config.open_upstream()
        self.downloads = Downloads(self._upstream, self.store, self.log, keep=not self.review)
        self._writing = asyncio.create_task(self.writer.run())

    async def stop(self) -> None:
        """Stop fetching and commit what was recorded (a shutdown loses nothing recorded)."""
        if self._writing is not None:
            self.writer.stop()
            await self._writing
        await self.refreshes.settle(self.config.timeout)  # what a refresh learnt is recorded, not lost
        await self.refreshes.cancel_all()
        if self.downloads is not None:
            await self.downloads.settle(self.config.timeout)
            await self.downloads.cancel_all()
        await self.writer.commit()
        if self._upstream is not None:
            await self._upstream.__aexit__(None, None, None)

    @property
    def _downloads(self) -> Downloads:
        assert self.downloads is not None, "PullThrough.start() first"
        return self.downloads

    @property
    def upstream(self) -> Upstream:
        assert self._upstream is not None, "PullThrough.start() first"
        return self._upstream

    # -- the record --------------------------------------------------------------------------------

    def recorded(self, name: str) -> ProjectManifest | None:
        """The record of ``name``: uncommitted batch first, then the commit in flight, then the tip."""
        item = self.writer.pending(name)
        return item.manifest if item is not None else self.committed(name)

    def recorded_names(self) -> list[str]:
        """The projects ``/simple/`` lists: what is served (in review mode, ``main``'s alone)."""
        if self.review:
            return self.serving.names()
        return sorted({*self.committed_names(), *self.writer.names()})

    # -- pages -------------------------------------------------------------------------------------

    def _fresh(self, name: str) -> Upstreamed | None:
        known = self.known.get(name)
        if known is None or known.fetched_at is None:
            return None
        return known if time.monotonic() - known.fetched_at < self.settings.ttl.total_seconds() else None

    def fetches(self, name: str) -> bool:
        """Whether the proxy fetches ``name`` from upstream (``proxy.allow``/``deny``, ``exclude``, and
        never a ``hosted:`` project that does not track upstream's: dependency confusion)."""
        return (
            self.settings.admits(name)
            and not self.rules.project_excluded(name)
            and not self.config.hosted.kept_from_upstream(name)
        )

    async def project(self, name: str, *, wait: bool = False) -> Served:
        """The page of ``name``, refreshed when older than the TTL (a recorded one in the background
        unless ``wait``); raises ``Unavailable``."""
        if self.review:
            return await self._reviewed(name)
        recorded = self.recorded(name)
        if not self.fetches(name):
            if recorded is None:
                raise Unavailable(404, f"{name} is not offered by this proxy (proxy allow/deny, exclude, hosted)")
            return Served(recorded)
        stale = await self._refreshed(name, recorded, wait)
        recorded = self.recorded(name)
        if recorded is None:
            raise Unavailable(404, f"no project {name} upstream")
        known = self.known.get(name)
        offers = [
            new_entry(offer, "", bool(offer.core_metadata and offer.metadata_url), offer.size)
            for offer in (known.offers.values() if known else ())
            if offer.filename not in recorded.files and offer.size is not None
        ]
        return Served(recorded.with_files(offers), stale)

    async def _reviewed(self, name: str) -> Served:
        """Review mode: ``main``'s page once the refresh was recorded (and, for a project ``main``
        does not serve yet, committed and judged by review's policy)."""
        served = self.serving.manifest(name)
        if not self.fetches(name):
            if served is None:
                raise Unavailable(404, f"{name} is not offered by this proxy (proxy allow/deny, exclude, hosted)")
            return Served(served)
        stale = await self._refreshed(name, served)
        if served is None:
            await self._downloads.of_project(name)
            await self.writer.commit()
            served = self.serving.manifest(name)
        if served is None:
            raise Unavailable(404, f"{name}: nothing approved yet (review: new releases wait for approval)")
        return Served(served, stale)

    async def _refreshed(self, name: str, recorded: ProjectManifest | None, wait: bool = False) -> str | None:
        """Refresh ``name`` when its page is older than the TTL; why what is served is stale (None: it is not).

        An unrecorded project (or any, with ``wait``) waits for its refresh, raising ``Unavailable``
        when it fails. A recorded one is served as recorded at once while one refresh runs in the
        background (stale-while-revalidate): no client waits for upstream where the record answers.
        It is stale while its last refresh failed.
        """
        if self._fresh(name) is not None:
            return None
        if recorded is None or wait:
            try:
                await asyncio.shield(self.refreshes.start(name, lambda: self._refresh(name)))
            except ProjectNotFound:
                if recorded is None:
                    raise Unavailable(404, f"no project {name} upstream") from None
            except UpstreamError as exc:
                if recorded is None:
                    raise Unavailable(504 if "timed out" in str(exc) else 502, f"upstream: {exc}") from None
        else:
            self._revalidate(name)
        known = self.known.get(name)
        stale = known.failed if known is not None else None
        if stale is not None:
            self.log(f"proxy: serving {name} as recorded ({stale})")
        return stale

    def _revalidate(self, name: str) -> None:
        """Refresh ``name`` in the background (joining a refresh that runs): nobody awaits it, so its
        failure is logged and counted here."""
        if self.refreshes.running(name) is None:
            refresh = self.refreshes.start(name, lambda: self._refresh(name))
            refresh.add_done_callback(functools.partial(self._revalidated, name))

    def _revalidated(self, name: str, refresh: asyncio.Future[None]) -> None:
        if refresh.cancelled() or refresh.exception() is None:
            return
        exc = refresh.exception()
        if isinstance(exc, ProjectNotFound):
            return  # not a failure: the record marks the removal
        if isinstance(exc, UpstreamError):
            self.log(f"proxy: refreshing {name} in the background failed: {exc}")
            self.count_failure("timeout" if "timed out" in str(exc) else "failed")
        else:
            trace = "".join(traceback.format_exception(exc)).rstrip()
            self.log(f"proxy: refreshing {name} in the background failed: {trace}")
            self.count_failure("error")

    async def _refresh(self, name: str) -> None:
        """Fetch the page as sync does, merge it into the record, and keep its offers (or why it failed)."""
        known = self.known.pop(name, None) or Upstreamed()
        self.known[name] = known  # the most recently fetched last: the oldest go first
        if len(self.known) > KNOWN_PROJECTS:
            del self.known[next(iter(self.known))]
        try:
            await self._fetch(name, known)
        except ProjectNotFound:
            known.failed = None
            raise
        except UpstreamError as exc:
            known.failed = f"upstream unavailable: {exc}"
            raise
        except Exception as exc:
            known.failed = f"refresh failed: {exc}"
            raise
        known.failed = None

    async def _fetch(self, name: str, known: Upstreamed) -> None:
        seen_at = now()
        pages = Pages(self.upstream)
        choices = await Resolver(self.rules, pages, None, follow=False).resolve(
            Roots(requirements=[Root(Requirement(name), "proxy request")])
        )
        try:
            remote = await pages.get(name)
        except ProjectNotFound:
            known.fetched_at, known.offers, known.missing = time.monotonic(), {}, True
            old = self.recorded(name)
            if old is not None:
                manifest, outcome = removed_upstream(old, seen_at)
                if outcome.changes:
                    self.writer.record(name, Pending(old, manifest, changes=outcome.changes))
            raise
        choice = choices.get(name) or ProjectChoice(name)
        old = self.recorded(name)
        tip, recording = self.repo.tip(self.config.branch), self.repo.tip(self.writer.branch)
        local = local_decisions(self.repo.read_path(tip, marks_path(name)))
        new_digests = [rf.sha256 for rf in remote.files if old is None or rf.filename not in old.files]
        lookup = Lookup([repo_reader(self.repo, recording), repo_reader(self.repo, tip)])
        taken_down = {digest: record for digest in new_digests if (record := lookup.record(digest)) is not None}
        manifest, wanted, outcome = merge(old, remote, choice, seen_at, local, taken_down)
        for line in outcome.errors + outcome.notes:
            self.log(f"proxy: {name}: {line}")
        known_conflicts = self._known_conflicts(name, recording) if outcome.conflicts else set()
        conflicts = [c for c in outcome.conflicts if (c.filename, c.upstream_sha256) not in known_conflicts]
        for conflict in conflicts:
            self.log(f"proxy: CONFLICT {conflict.text}")
        if old is None or outcome.changes or conflicts:
            changes = outcome.changes if old is not None else ["recorded on first request", *outcome.changes]
            self.writer.record(name, Pending(old, manifest, changes=changes, conflicts=conflicts))
        known.fetched_at, known.missing = time.monotonic(), False
        known.offers = {remote_file.filename: remote_file for remote_file in wanted}
        if self.review:  # recorded at once, for the reviewer (and review's policy) to read
            self.writer.policy_due = True
            for remote_file in wanted:
                then = functools.partial(self._stored, name, remote_file)
                self._downloads.start(
                    remote_file.sha256, remote_file.url, remote_file.size, remote_file.filename, then, name
                )
            return
        # a page must announce a file's size: one upstream does not announce is stored first
        unsized = [remote_file for remote_file in wanted if remote_file.size is None]
        await asyncio.gather(*(self._stored(name, remote_file) for remote_file in unsized), return_exceptions=True)

    def _known_conflicts(self, name: str, tip: bytes | None) -> set[tuple[str, str]]:
        logged = recorded_conflicts(self.repo.read_path(tip, f"{CONFLICTS_DIR}/{name}.jsonl") or b"")
        item = self.writer.pending(name)
        logged |= {(c.filename, c.upstream_sha256) for c in item.conflicts} if item else set()
        return logged

    # -- files -------------------------------------------------------------------------------------

    async def file(self, name: str, filename: str) -> Stored | Streaming | None:
        """A file the record holds uncommitted, or one offered (downloaded now); None: the tip's
        (or nobody's) file, for the mirror's own file route (in review mode: always, ``main``'s)."""
        if self.review:
            return None
        committed = self.committed(name)
        if committed is not None and _entry(committed, filename) is not None:
            return None
        found = _entry(self.recorded(name), filename)
        if found is not None:
            entry, is_metadata = found
            return Stored(entry.core_metadata if is_metadata and entry.core_metadata else entry.sha256)
        if not self.fetches(name):
            return None
        if self._fresh(name) is None:
            try:
                await self.project(name, wait=True)  # a page served before a restart names files this process never saw
            except Unavailable:
                return None
        known = self.known.get(name)
        offer = known.offers.get(filename.removesuffix(".metadata")) if known else None
        if offer is None or _quarantined(self.recorded(name)):
            return None
        if filename.endswith(".metadata"):
            if offer.filename == filename or not (offer.core_metadata and offer.metadata_url):
                return None
            if await asyncio.to_thread(self.store.has, offer.core_metadata):
                return Stored(offer.core_metadata)  # stored on its own, recorded with its wheel
            label = offer.filename + ".metadata"
            body = self._downloads.start(offer.core_metadata, offer.metadata_url, None, label)
            return Streaming(body, None, offer.core_metadata)
        if await asyncio.to_thread(self.store.has, offer.sha256):
            await self._stored(name, offer)
            return Stored(offer.sha256)
        then = functools.partial(self._stored, name, offer)
        body = self._downloads.start(offer.sha256, offer.url, offer.size, offer.filename, then, project=name)
        return Streaming(body, offer.size, offer.sha256)

    async def _stored(self, name: str, offer: RemoteFile, size: int | None = None) -> None:
        """Record ``offer`` once its blob is stored (downloaded now if it is not), with its PEP 658 file
        as sync stores it (``RunDownloads.fetch``)."""
        stored, has_metadata, errors = await RunDownloads(self.store, Progress()).fetch(self.upstream, offer)
        for error in errors:
            self.log(f"proxy: {error}")
        if not stored:
            return
        size = size if size is not None else offer.size
        if size is None:
            size = await asyncio.to_thread(self.store.size, offer.sha256)
        # read and record with no await between: a concurrent _stored of this project must not be lost
        current = self.recorded(name)
        if current is not None and offer.filename in current.files:
            return
        base = current or ProjectManifest(name=name)
        entry = new_entry(offer, now(), has_metadata, size)
        self.writer.record(name, Pending(current, base.with_file(entry), added=[offer.filename]))


def _entry(manifest: ProjectManifest | None, filename: str) -> tuple[FileEntry, bool] | None:
    """The entry a file URL names in ``manifest``, and whether it asks for the PEP 658 file."""
    if manifest is None:
        return None
    entry = manifest.files.get(filename)
    if entry is not None:
        return entry, False
    entry = manifest.files.get(filename.removesuffix(".metadata"))
    if filename.endswith(".metadata") and entry is not None and entry.core_metadata:
        return entry, True
    return None


def _quarantined(manifest: ProjectManifest | None) -> bool:
    return manifest is not None and manifest.status == "quarantined"
