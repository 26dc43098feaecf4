"""The mirror for people and operators: HTML pages, ``/health`` and ``/metrics`` beside the simple API.

Pages are rendered server-side by Jinja2 with autoescape on, so every upstream-provided string (a
yank reason, a status reason, a version, core metadata, a commit message) is text on the page,
never markup. Git reads for pages run in a small pool of threads, each with its own repository
handle (dulwich's readers are not shared between threads), so a slow history walk never holds up
``/simple/``. ``install`` adds all of it to the app ``create_app`` made.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from jinja2 import Environment, PackageLoader, StrictUndefined
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..model.names import UnsafeNameError, normalize
from ..review.review import build as build_review
from ..review.review_report import Report, format_duration, size_text
from ..storage.repo import Commit, MetadataRepo, RepoError
from ..storage.snapshot import Resolver, RevisionError
from ..storage.store import BlobStore
from ..sync.config import Config
from . import metrics, web_data
from .health import health_routes
from .names_index import NameIndex, search_key
from .request_counts import RequestCounts
from .revisions import check_shape
from .view import MirrorView
from .web_history import HistoryCache
from .web_provenance import stored_publishers
from .web_writers import WriterActivity, writer_of

T = TypeVar("T")
SEARCH_LIMIT = 100
#: commits per page of a project's history, and events shown per commit (a first sync of a large
#: project records thousands of files in one commit)
HISTORY_PAGE = 50
HISTORY_EVENTS = 200
ENVIRONMENT = Environment(
    loader=PackageLoader("gitmirror.serve", "templates"),
    autoescape=True,  # every template, whatever its name: upstream strings are never markup
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters["size"] = size_text
ENVIRONMENT.filters["duration"] = format_duration
ENVIRONMENT.globals["shown"] = web_data.SHOWN_REQUIREMENTS  # the review page's longest lists
STYLESHEET = resources.files("gitmirror.serve").joinpath("static/web.css").read_bytes()
HTML = "text/html; charset=utf-8"


class Pages:
    """The page handlers of one app: a thread pool with a ``MirrorView`` per thread, shared memos."""

    def __init__(self, config: Config, workers: int = 2) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="gitmirror-web")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._names = web_data.PerTip(2)  # name indexes: the tip's, and the one before while it moves
        self._memo = web_data.PerTip(64)  # reports, last sync commits, recent changes: per tip
        self.histories = HistoryCache()
        self.activity = WriterActivity()
        self.collector = metrics.MirrorCollector(config, self.last_sync_time)
        self.requests = RequestCounts()  # counted by ``metrics.RequestMetrics``
        self.registry = CollectorRegistry()
        self.registry.register(self.requests)
        self.registry.register(self.collector)

    # -- running work off the event loop -------------------------------------------------------

    def view(self) -> MirrorView:
        """This thread's own view of the repository."""
        view: MirrorView | None = getattr(self._local, "view", None)
        if view is None:
            repo = MetadataRepo(self.config.repo)
            view = self._local.view = MirrorView(repo, BlobStore(self.config.store), self.config.branch)
            self._local.metadata = web_data.PerTip(4096)
        return view

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    def memo(self, key: tuple[object, ...], make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[return-value]
        value = make()
        with self._lock:
            self._memo.remember(key, value)
        return value

    def name_index(self, commit: bytes | None) -> NameIndex:
        with self._lock:
            found = self._names.get((commit,))
        if found is None:
            found = NameIndex(self.view().projects(commit))
            with self._lock:
                self._names.remember((commit,), found)
        assert isinstance(found, NameIndex)
        return found

    def last_sync_time(self) -> float | None:
        """For ``/metrics``: the commit time of the newest sync commit on the synced branch."""
        commit = self.activity.newest(self.view().repo, web_data.synced_branch(self.config)).get("sync")
        return commit.commit_time if commit is not None else None

    async def metrics(self, request: Request) -> Response:
        """``/metrics``, collected in this pool (reading git for the last sync is not for the event loop)."""
        return await self.run(metrics.exposition, self.registry)

    # -- pages -----------------------------------------------------------------------------------

    async def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """``template`` rendered in the pool (a project of thousands of files is not rendered on the loop)."""
        base = str(request.base_url)
        context = {
            "index_url": base + "simple/",
            "upload_url": base + "legacy/",
            "review_enabled": self.config.review.enabled,
            **context,
        }
        body = await self.run(ENVIRONMENT.get_template(template).render, context)
        return Response(body, status_code=status, media_type=HTML, headers={"cache-control": "no-cache"})

    async def home(self, request: Request) -> Response:
        return await self.page(request, "home.html", **await self.run(self._home_facts))

    def _home_facts(self) -> dict[str, Any]:
        view = self.view()
        repo, tip = view.repo, view.tip()
        synced = self.activity.newest(repo, web_data.synced_branch(self.config))
        served = self.activity.newest(repo, self.config.branch)  # uploads land on the served branch
        activity = {"sync": synced.get("sync"), "proxy": synced.get("proxy"), "upload": served.get("upload")}
        clean = web_data.last_clean_sync(self.config)
        return {
            "config": self.config,
            "tip": web_data.commit_line(repo.commit(tip)) if tip is not None else None,
            "last": {kind: _activity_line(commit) for kind, commit in activity.items()},
            "last_clean_sync": web_data.when(clean) if clean is not None else None,
            "projects": len(self.name_index(tip)),
            "snapshots": len(self._snapshots()),
            "store": self.collector.store_size and self.collector.store_size.current(),  # (blobs, bytes) or None
            "recent": self.memo(("recent", tip), lambda: web_data.recent_changes(repo, tip)),
        }

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")[:200]
        key = search_key(query)
        if not query.strip():  # no query: every project A-Z, a page at a time
            after = request.query_params.get("after", "")[:200]
            names, more = await self.run(lambda: self.name_index(self.view().tip()).after(after, SEARCH_LIMIT))
            return await self.page(request, "search.html", query="", results=names, more=more)
        if key is None:
            return await self.page(request, "search.html", query=query, results=[], more=False)
        results, more = await self.run(lambda: self.name_index(self.view().tip()).search(key, SEARCH_LIMIT))
        return await self.page(request, "search.html", query=query, results=results, more=more)

    async def project(self, request: Request) -> Response:
        name = _project_name(request)
        if isinstance(name, Response):
            return name
        facts = await self.run(self._project_facts, name)
        if facts is None:
            return await self.page(request, "missing.html", 404, what=f"no project {name} in this mirror")
        return await self.page(request, "project.html", **facts)

    def _project_facts(self, name: str) -> dict[str, Any] | None:
        view = self.view()
        manifest = view.manifest(view.tip(), name)
        if manifest is None:
            return None
        cache = self._local.metadata
        provenance = {
            entry.filename: stored_publishers(view.store, entry.provenance, cache)
            for entry in manifest.files.values()
            if entry.provenance and entry.tombstone is None
        }
        return {
            "manifest": manifest,
            "releases": web_data.releases(manifest, view.store, cache),
            "provenance": provenance,
            "hosted": self.config.hosted.entry(manifest.name),
        }

    async def history(self, request: Request) -> Response:
        name = _project_name(request)
        if isinstance(name, Response):
            return name

        def entries() -> list[Any] | None:
            view = self.view()
            tip = view.tip()
            if view.manifest(tip, name) is None:
                return None
            return self.histories.get(view.repo, tip, name, self.config.branch)

        found = await self.run(entries)
        if found is None:
            return await self.page(request, "missing.html", 404, what=f"no project {name} in this mirror")
        number = request.query_params.get("page", "1")
        start = (int(number) - 1) * HISTORY_PAGE if number.isdigit() and 0 < int(number) < 10**6 else -1
        if start < 0 or (start and start >= len(found)):
            return await self.page(request, "missing.html", 404, what=f"no page {number[:20]} of {name}'s history")
        shown = found[start : start + HISTORY_PAGE]
        return await self.page(
            request,
            "history.html",
            name=name,
            history=shown,
            page=int(number),
            older=start + HISTORY_PAGE < len(found),
            events_shown=HISTORY_EVENTS,
        )

    async def review(self, request: Request) -> Response:
        if not self.config.review.enabled:
            return await self.page(request, "missing.html", 404, what="review is not enabled in this mirror.yaml")
        try:
            report = await self.run(self._review_report)
        except RepoError as exc:
            return await self.page(request, "missing.html", 404, what=str(exc))
        return await self.page(request, "review.html", report=report)

    def _review_report(self) -> Report:
        view, config = self.view(), self.config
        key = ("review", view.repo.tip(config.branch), view.repo.tip(config.review.branch))
        return self.memo(key, lambda: build_review(view.repo, view.store, config, config.branch, config.review.branch))

    async def snapshots(self, request: Request) -> Response:
        rows = await self.run(self._snapshots)
        return await self.page(request, "snapshots.html", snapshots=rows)

    def _snapshots(self) -> list[web_data.SnapshotRow]:
        view = self.view()
        tip, tags = view.tip(), tuple(sorted(view.repo.refs(b"refs/tags/").items()))
        return self.memo(("snapshots", tip, tags), lambda: web_data.snapshots(view.repo, tip, self.config.branch))

    async def snapshot_diff(self, request: Request) -> Response:
        rev = request.path_params["rev"]

        def diff() -> tuple[str, web_data.SnapshotDiff]:
            check_shape(rev)
            view = self.view()
            snapshot = Resolver(view.repo, self.config.branch)(rev)  # only states the branch served
            tip = view.tip()
            changes = self.memo(
                ("diff", snapshot.commit, tip), lambda: web_data.snapshot_diff(view.repo, snapshot.commit, tip)
            )
            return snapshot.commit.decode(), changes

        try:
            commit, changes = await self.run(diff)
        except RevisionError as exc:
            return await self.page(request, "missing.html", 404, what=" ".join(str(exc).split()))
        return await self.page(request, "diff.html", rev=rev, commit=commit, diff=changes)


def _activity_line(commit: Commit | None) -> tuple[web_data.CommitLine, str] | None:
    """A writer's newest commit for the home page: its line and who wrote it."""
    if commit is None:
        return None
    writer = writer_of(commit.message.decode("utf-8", "replace"), commit.author.decode("utf-8", "replace"))
    return web_data.commit_line(commit), writer.label


def _project_name(request: Request) -> str | Response:
    """The normalized name of ``/project/<name>/...``, a 301 to it, or a 404."""
    raw = request.path_params["project"]
    try:
        name = normalize(raw)
    except UnsafeNameError:
        return PlainTextResponse("no such project", status_code=404)
    if name != raw:
        return RedirectResponse(request.url.path.replace(f"/project/{raw}/", f"/project/{name}/", 1), 301)
    return name


async def stylesheet(request: Request) -> Response:
    return Response(STYLESHEET, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


def install(app: Starlette, config: Config) -> None:
    """Add the pages, ``/health``, ``/metrics`` and the request metrics (and access log) to ``app``."""
    pages = Pages(config)
    app.router.routes += [  # after /simple/ and /files/: installers' requests match first
        Route("/", pages.home),
        Route("/search/", pages.search),
        Route("/project/{project}/", pages.project),
        Route("/project/{project}/history/", pages.history),
        Route("/review/", pages.review),
        Route("/snapshots/", pages.snapshots),
        Route("/snapshots/{rev}/diff/", pages.snapshot_diff),
        Route("/static/web.css", stylesheet),
        Route("/metrics", pages.metrics),
        *health_routes(),
    ]
    app.add_middleware(metrics.RequestMetrics, counts=pages.requests)
    app.state.pages = pages
