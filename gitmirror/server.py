"""The HTTP face of the mirror: simple-API pages rendered from git commits, files from the store.

Every request resolves the branch tip once and then reads only that commit, so a sync that commits
meanwhile is seen whole or not at all. Pages of a commit never change, which makes them safe to
cache by commit id in memory; blobs are immutable by construction and say so to HTTP caches.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from . import index
from .manifest import FileEntry, ProjectManifest, blobs_of
from .metadata import in_wheel
from .names import UnsafeNameError, check_filename, is_normalized, normalize
from .repo import MetadataRepo
from .revisions import BoundedResolver
from .snapshot import RevisionError
from .store import BlobStore

_URL_SAFE = "/:@!$&'()*+,;=~"
IMMUTABLE = "public, max-age=31536000, immutable"
TIP_MAX_AGE = "public, max-age=60"
SNAPSHOT_MAX_AGE = "public, max-age=300"  # tags and dates: stable in practice, not by construction


@dataclass(frozen=True)
class Page:
    body: bytes
    media_type: str
    etag: str


class _LRU(OrderedDict[tuple[object, ...], object]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: tuple[object, ...], value: object) -> object:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class MirrorView:
    """Pages and files of one repository at any commit; shared by live and snapshot routes."""

    def __init__(self, repo: MetadataRepo, store: BlobStore, branch: str = "main") -> None:
        self.repo = repo
        self.store = store
        self.branch = branch
        self._cache = _LRU(8192)
        self._tip: tuple[object, float, bytes | None] | None = None
        self._ref_files = tuple(str(repo.path / name) for name in (f"refs/heads/{branch}", "packed-refs"))

    def tip(self) -> bytes | None:
        """The branch tip, re-read when its ref file changed (a ref moves by rename: new inode) or after 1 s.

        One stat instead of dulwich's open-read-parse on every request (system calls were a third of
        a cached page's cost): a loose ref wins over ``packed-refs``, so that file matters only while
        the loose one is absent. The 1 s bound covers the theoretical reuse of an inode within one
        mtime tick.
        """
        stamp = _stat_key(self._ref_files[0])
        if stamp is None:  # packed (git pack-refs, gc) or not created yet
            stamp = (None, _stat_key(self._ref_files[1]))
        now = time.monotonic()
        if self._tip is None or self._tip[0] != stamp or now - self._tip[1] > 1.0:
            self._tip = (stamp, now, self.repo.tip(self.branch))
        return self._tip[2]

    def manifest(self, commit: bytes | None, name: str) -> ProjectManifest | None:
        key = ("manifest", commit, name)
        if key not in self._cache:
            return self._cache.remember(key, self.repo.manifest(commit, name))  # type: ignore[return-value]
        return self._cache[key]  # type: ignore[return-value]

    def projects(self, commit: bytes | None) -> list[str]:
        key = ("projects", commit)
        if key not in self._cache:
            return self._cache.remember(key, self.repo.projects(commit))  # type: ignore[return-value]
        return self._cache[key]  # type: ignore[return-value]

    def root_page(self, commit: bytes | None, media_type: str) -> Page:
        key = ("root", commit, media_type)
        if key not in self._cache:
            names = self.projects(commit)
            body = index.root_json(names) if media_type == index.JSON_TYPE else index.root_html(names)
            return self._cache.remember(key, _page(body, media_type))  # type: ignore[return-value]
        return self._cache[key]  # type: ignore[return-value]

    def project_page(self, commit: bytes | None, name: str, media_type: str) -> Page | None:
        key = ("project", commit, name, media_type)
        if key not in self._cache:
            manifest = self.manifest(commit, name)
            if manifest is None:
                return None
            body = index.project_json(manifest) if media_type == index.JSON_TYPE else index.project_html(manifest)
            return self._cache.remember(key, _page(body, media_type))  # type: ignore[return-value]
        return self._cache[key]  # type: ignore[return-value]

    async def metadata_in_wheel(self, project: str, entry: FileEntry) -> bytes | None:
        """A PEP 658 file read out of its wheel (``metadata.in_wheel``, in a thread), kept for the next
        request; not found is not kept (``hydrate`` may bring the wheel)."""
        key = ("in-wheel", entry.core_metadata)
        if key in self._cache:
            return self._cache[key]  # type: ignore[return-value]
        _file, metadata = blobs_of(project, entry)
        data = await asyncio.to_thread(in_wheel, self.store, metadata.sha256, metadata.wheel)
        return data if data is None else self._cache.remember(key, data)  # type: ignore[return-value]

    def withheld(self, commit: bytes | None, project: str, entry: FileEntry) -> str | None:
        """Why a file recorded at ``commit`` must not be served, or None when it may be.

        A tombstone or a quarantine (PEP 792) at that commit or at the tip of the branch withholds
        it: a file taken down or a project quarantined after a snapshot is not offered through
        that snapshot either.
        """
        tip = self.tip()
        for manifest in (self.manifest(commit, project), None if tip == commit else self.manifest(tip, project)):
            if manifest is None:
                continue
            recorded = manifest.files.get(entry.filename, entry)
            if recorded.tombstone is not None:
                return f"{entry.filename} was taken down on {recorded.tombstone.time}: {recorded.tombstone.reason}"
            if not index.offers_files(manifest):
                reason = f": {manifest.status_reason}" if manifest.status_reason else ""
                return f"{project} is quarantined, its files are not offered{reason}"
        return None

    def file_entry(self, commit: bytes | None, project: str, filename: str) -> tuple[FileEntry, bool] | None:
        """The entry a file URL refers to, and whether the URL asks for its core metadata."""
        manifest = self.manifest(commit, project)
        if manifest is None:
            return None
        entry = manifest.files.get(filename)
        if entry is not None:
            return entry, False
        if filename.endswith(".metadata"):
            entry = manifest.files.get(filename[: -len(".metadata")])
            if entry is not None and entry.core_metadata:
                return entry, True
        return None


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def _page(body: bytes, media_type: str) -> Page:
    return Page(body=body, media_type=media_type, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def page_answer(page: Page, cache_control: str, if_none_match: str | None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body for a page: the one definition both the router and the fast path use."""
    headers = {"etag": page.etag, "vary": "Accept", "cache-control": cache_control}
    if page.etag in (if_none_match or ""):
        return 304, headers, b""
    headers["content-type"] = page.media_type + ("" if page.media_type == index.JSON_TYPE else "; charset=utf-8")
    headers["content-length"] = str(len(page.body))
    return 200, headers, page.body


def page_response(request: Request, page: Page, cache_control: str) -> Response:
    status, headers, body = page_answer(page, cache_control, request.headers.get("if-none-match"))
    return Response(body, status_code=status, headers=headers)


class SimpleRoutes:
    """Request handlers over a ``MirrorView``; ``commit_of`` picks the commit a request reads."""

    def __init__(self, view: MirrorView) -> None:
        self.view = view

    async def commit_of(self, request: Request) -> tuple[bytes | None, str]:
        """The commit to serve and the Cache-Control its pages get (the tip changes: short)."""
        return self.view.tip(), TIP_MAX_AGE

    async def root(self, request: Request) -> Response:
        media_type = index.choose_format(request.headers.get("accept"))
        if media_type is None:
            return PlainTextResponse("not acceptable: ask for PEP 691 JSON or HTML", status_code=406)
        commit, cache_control = await self.commit_of(request)
        return page_response(request, self.view.root_page(commit, media_type), cache_control)

    async def project(self, request: Request) -> Response:
        raw = request.path_params["project"]
        try:
            name = normalize(raw)
        except UnsafeNameError:
            return PlainTextResponse("no such project", status_code=404)
        if name != raw or not request.url.path.endswith("/"):
            return RedirectResponse(_sibling_url(request, raw, name), status_code=301)
        media_type = index.choose_format(request.headers.get("accept"))
        if media_type is None:
            return PlainTextResponse("not acceptable: ask for PEP 691 JSON or HTML", status_code=406)
        commit, cache_control = await self.commit_of(request)
        page = self.view.project_page(commit, name, media_type)
        if page is None:
            return PlainTextResponse(f"no project {name} in this mirror", status_code=404)
        return page_response(request, page, cache_control)

    async def file(self, request: Request) -> Response:
        project, filename = request.path_params["project"], request.path_params["filename"]
        try:
            name = normalize(project)
            check_filename(filename.removesuffix(".metadata"))
        except UnsafeNameError:
            return PlainTextResponse("no such file", status_code=404)
        if name != project:
            return RedirectResponse(_file_url(request, project, name, filename), status_code=301)
        commit, _ = await self.commit_of(request)
        found = self.view.file_entry(commit, name, filename)
        if found is None:
            return PlainTextResponse("no such file in this mirror", status_code=404)
        entry, is_metadata = found
        withheld = self.view.withheld(commit, name, entry)
        if withheld is not None:
            return PlainTextResponse(withheld, status_code=410)
        digest = entry.core_metadata if is_metadata else entry.sha256
        assert digest is not None
        path = self.view.store.path(digest)
        try:
            stat_result: os.stat_result | None = os.stat(path)
        except OSError:
            stat_result = None
        kept_in_wheel = (
            None if stat_result is not None or not is_metadata else await self.view.metadata_in_wheel(name, entry)
        )
        if stat_result is None and kept_in_wheel is None:
            return PlainTextResponse(f"{filename} is recorded but its blob is not in this store", status_code=404)
        headers = {"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE}
        if digest in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if kept_in_wheel is not None:
            return Response(kept_in_wheel, media_type="application/octet-stream", headers=headers)
        return BlobResponse(path, media_type="application/octet-stream", headers=headers, stat_result=stat_result)


class BlobResponse(FileResponse):
    """Starlette's file response reading 256 KiB per step instead of 64 KiB: each read is a hop to a
    worker thread. A 1 MiB wheel went from 440 to 680 req/s (1 MiB steps gave 800, but hold 1 MiB per
    response in flight: a thousand concurrent downloads would pin a gigabyte)."""

    chunk_size = 256 * 1024


def _sibling_url(request: Request, raw: str, name: str) -> str:
    path = request.url.path
    prefix = path[: path.rindex(raw)] if raw in path else "/simple/"
    return quote(prefix + name + "/", safe=_URL_SAFE)


def _file_url(request: Request, raw: str, name: str, filename: str) -> str:
    """The URL of the same file under the normalized project name (the route ends ``<raw>/<filename>``)."""
    path = request.url.path
    prefix = path[: -len(f"{raw}/{filename}")]
    return quote(f"{prefix}{name}/{filename}", safe=_URL_SAFE)


def routes_for(handlers: SimpleRoutes, prefix: str = "") -> list[Route]:
    return [
        Route(prefix + "/simple/", handlers.root),
        Route(prefix + "/simple/{project}/", handlers.project),
        Route(prefix + "/simple/{project}", handlers.project),
        Route(prefix + "/files/{project}/{filename}", handlers.file),
    ]


class SnapshotRoutes(SimpleRoutes):
    """``/snapshot/<rev>/...``: the same handlers, reading the commit the path names."""

    def __init__(self, view: MirrorView) -> None:
        super().__init__(view)
        self.resolve = BoundedResolver(view.repo, view.tip, view.branch)

    async def commit_of(self, request: Request) -> tuple[bytes | None, str]:
        try:
            snapshot = await self.resolve(request.path_params["rev"])
        except RevisionError as exc:
            raise HTTPException(404, " ".join(str(exc).split())) from None
        return snapshot.commit, IMMUTABLE if snapshot.pinned else SNAPSHOT_MAX_AGE


async def _home(request: Request) -> Response:
    return RedirectResponse("/simple/", status_code=302)


class _App(Starlette):
    """Starlette, plus a direct answer for ``GET /simple/<normalized-name>/`` of the tip when the page
    is known: the same status, headers and body ``SimpleRoutes.project`` gives, without the router,
    middleware and Request/Response objects (most of a cached page's cost). Anything else (redirects,
    406, 404, errors, snapshots, files) goes through Starlette as before. ``gitmirror serve`` answers
    most of these requests even earlier, in the HTTP protocol (``fastpath``); this path covers the rest
    (a request pipelined behind a slow one, a client that is not reading, other servers).
    """

    view: MirrorView

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith("/simple/"):
            answer = self._fast_page(scope)
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)

    def _fast_page(self, scope: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path = scope["path"]
        if not path.endswith("/"):
            return None
        accept = if_none_match = None
        for key, value in scope["headers"]:
            if key == b"accept" and accept is None:  # the first one, as Starlette's headers.get
                accept = value.decode("latin-1")
            elif key == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        page = tip_page(self.view, path[len("/simple/") : -1], accept)
        if page is None:
            return None
        status, headers, body = page_answer(page, TIP_MAX_AGE, if_none_match)
        return status, [(key.encode(), value.encode("latin-1")) for key, value in headers.items()], body


def tip_page(view: MirrorView, raw: str, accept: str | None) -> Page | None:
    """The cached tip page ``GET /simple/<raw>/`` gets from ``SimpleRoutes.project``, or None when that
    route must answer itself (a name to redirect, 406, an unknown project, an error to report).

    Shared by both direct paths so that what they may answer is decided in one place.
    """
    try:
        media_type = _direct_format(raw, accept)
        if media_type is None:
            return None
        return view.project_page(view.tip(), raw, media_type)
    except Exception:  # Starlette's route answers (and reports) it as before
        return None


@functools.lru_cache(maxsize=4096)
def _direct_format(raw: str, accept: str | None) -> str | None:
    """The media type to answer for an already-normalized ``raw`` and this Accept header, else None.

    Pure, and clients send few distinct (name, Accept) pairs, so it is cached (bounded) instead of
    running the name check and the q-value parsing on every request.
    """
    if not raw or "/" in raw or not is_normalized(raw):
        return None
    return index.choose_format(accept)


def create_app(repo_path: Path, store_path: Path, branch: str = "main") -> _App:
    view = MirrorView(MetadataRepo(repo_path), BlobStore(store_path), branch)
    routes = [Route("/", _home), *routes_for(SimpleRoutes(view)), *routes_for(SnapshotRoutes(view), "/snapshot/{rev}")]
    app = _App(routes=routes)
    app.view = view
    app.state.view = view
    return app


def raise_open_file_limit(wanted: int = 65536) -> None:
    """Each open connection is a file descriptor; a common soft limit of 1024 would refuse the 1,000th client."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(repo_path: Path, store_path: Path, host: str, port: int, branch: str = "main") -> None:
    import uvicorn

    raise_open_file_limit()
    app = create_app(repo_path, store_path, branch)
    uvicorn.run(app, host=host, port=port, log_level="warning", backlog=2048, timeout_keep_alive=30, http=_http(app))


def _http(app: _App) -> Any:
    """The HTTP protocol: uvicorn's httptools one with tip pages answered directly (``fastpath``), or
    uvicorn's own choice if that subclass cannot be built on the installed uvicorn/httptools."""
    try:
        from .fastpath import TipPageProtocol
    except ImportError:
        return "auto"
    return TipPageProtocol.serving(app.view)
