"""The HTTP face of the mirror: Starlette routes over a ``MirrorView`` (pages from git, files from the store).

Every request resolves the branch tip once and then reads only that commit, so a sync that commits
meanwhile is seen whole or not at all. Pages of a commit never change, which makes them safe to
cache (``view``); blobs are immutable by construction and say so to HTTP caches. For the highest
throughput, serve the output of ``gitmirror render`` with nginx or a CDN instead (docs/serving.md).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..hosted.routes import install as install_hosted
from ..model.manifest import PROVENANCE_SUFFIX
from ..model.names import UnsafeNameError, check_filename, normalize
from ..storage.repo import MetadataRepo
from ..storage.s3store import S3Store
from ..storage.snapshot import RevisionError
from ..sync.config import Config
from ..sync.store_config import open_store
from . import index, logs, web
from .bucket_files import bucket_file
from .checkpoint import checkpoint_routes
from .provenance import provenance_response
from .revisions import BoundedResolver
from .view import MirrorView, Page

_URL_SAFE = "/:@!$&'()*+,;=~"
IMMUTABLE = "public, max-age=31536000, immutable"
TIP_MAX_AGE = "public, max-age=60"
SNAPSHOT_MAX_AGE = "public, max-age=300"  # tags and dates: stable in practice, not by construction


def file_headers(digest: str) -> dict[str, str]:
    """A stored file's headers: named by its digest, never changing, and never sniffed by a browser
    as another type (a hostile upload's bytes shown as a page of this origin)."""
    return {"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}


def page_response(request: Request, page: Page, cache_control: str) -> Response:
    """A page with its ETag, or 304 when the client holds it; one ETag per representation, so ``Vary: Accept``."""
    return _page_answer(page, cache_control, page.etag in (header(request, "if-none-match") or ""))


def header(request: Request, name: str) -> str | None:
    """A request header's (first) value, or None, looked up without ``Headers.get``: that raises and
    catches a KeyError for an absent header, and most requests carry no If-None-Match."""
    headers = request.headers
    return headers[name] if name in headers else None  # noqa: SIM401 - that is the point


@functools.lru_cache(maxsize=4096)
def _page_answer(page: Page, cache_control: str, held: bool) -> Response:
    """``page_response``'s answer, built once: a ``Response`` holds no state of the request it answers."""
    headers = {"etag": page.etag, "vary": "Accept", "cache-control": cache_control}
    if held:
        return Response(status_code=304, headers=headers)
    charset = "" if page.media_type == index.JSON_TYPE else "; charset=utf-8"
    return Response(page.body, headers={**headers, "content-type": page.media_type + charset})


def _media_type(request: Request) -> str | None:
    """The page type the request's Accept header asks for (PEP 691), or None for 406."""
    accept = header(request, "accept")
    return _chosen_format(accept) if accept is None or len(accept) <= 512 else index.choose_format(accept)


@functools.lru_cache(maxsize=512)
def _chosen_format(accept: str | None) -> str | None:
    """``index.choose_format``, kept for the few Accept headers installers send (it runs per request)."""
    return index.choose_format(accept)


#: ``normalize``, kept for the project names clients ask for (it runs per request; a name it
#: rejects raises again each time)
_normalized = functools.lru_cache(maxsize=8192)(normalize)


class SimpleRoutes:
    """Request handlers over a ``MirrorView``; ``commit_of`` picks the commit a request reads."""

    def __init__(self, view: MirrorView) -> None:
        self.view = view

    async def commit_of(self, request: Request) -> tuple[bytes | None, str]:
        """The commit to serve and the Cache-Control its pages get (the tip changes: short)."""
        return self.view.tip(), TIP_MAX_AGE

    async def root(self, request: Request) -> Response:
        media_type = _media_type(request)
        if media_type is None:
            return PlainTextResponse("not acceptable: ask for PEP 691 JSON or HTML", status_code=406)
        commit, cache_control = await self.commit_of(request)
        return page_response(request, await self.view.root_page(commit, media_type), cache_control)

    async def project(self, request: Request) -> Response:
        raw = request.path_params["project"]
        try:
            name = _normalized(raw)
        except UnsafeNameError:
            return PlainTextResponse("no such project", status_code=404)
        if name != raw:
            return RedirectResponse(_sibling_url(request, raw, name), status_code=301)
        media_type = _media_type(request)
        if media_type is None:
            return PlainTextResponse("not acceptable: ask for PEP 691 JSON or HTML", status_code=406)
        commit, cache_control = await self.commit_of(request)
        page = self.view.project_page(commit, name, media_type)
        if page is None:
            return PlainTextResponse(f"no project {name} in this mirror", status_code=404)
        return page_response(request, page, cache_control)

    async def project_without_slash(self, request: Request) -> Response:
        """``/simple/<project>``: 301 to the page's one URL (normalized, with the slash)."""
        raw = request.path_params["project"]
        try:
            name = _normalized(raw)
        except UnsafeNameError:
            return PlainTextResponse("no such project", status_code=404)
        return RedirectResponse(_sibling_url(request, raw, name), status_code=301)

    async def file(self, request: Request) -> Response:
        project, filename = request.path_params["project"], request.path_params["filename"]
        try:
            name = _normalized(project)
            check_filename(filename.removesuffix(".metadata").removesuffix(PROVENANCE_SUFFIX))
        except UnsafeNameError:
            return PlainTextResponse("no such file", status_code=404)
        if name != project:
            return RedirectResponse(_file_url(request, project, name, filename), status_code=301)
        commit, _ = await self.commit_of(request)
        if filename.endswith(PROVENANCE_SUFFIX):  # PEP 740
            return provenance_response(self.view, commit, name, filename, request, IMMUTABLE)
        found = self.view.file_entry(commit, name, filename)
        if found is None:
            return PlainTextResponse("no such file in this mirror", status_code=404)
        entry, is_metadata = found
        withheld = self.view.withheld(commit, name, entry)
        if withheld is not None:
            return PlainTextResponse(withheld, status_code=410)
        digest = entry.core_metadata if is_metadata else entry.sha256
        assert digest is not None
        store = self.view.store
        if isinstance(store, S3Store):
            headers = file_headers(digest)
            etags = header(request, "if-none-match") or ""
            return await bucket_file(self.view, store, name, entry, digest, is_metadata, etags, headers)
        path = store.local_file(digest)
        assert path is not None, "a store that is not a bucket has its blobs on this machine"
        try:
            stat_result: os.stat_result | None = os.stat(path)
        except OSError:
            stat_result = None
        kept_in_wheel = (
            None if stat_result is not None or not is_metadata else await self.view.metadata_in_wheel(name, entry)
        )
        if stat_result is None and kept_in_wheel is None:
            return PlainTextResponse(f"{filename} is recorded but its blob is not in this store", status_code=404)
        headers = file_headers(digest)
        if digest in (header(request, "if-none-match") or ""):
            return Response(status_code=304, headers=headers)
        if kept_in_wheel is not None:
            return Response(kept_in_wheel, media_type="application/octet-stream", headers=headers)
        return BlobResponse(path, media_type="application/octet-stream", headers=headers, stat_result=stat_result)


class BlobResponse(FileResponse):
    """Starlette's file response reading 256 KiB per step instead of 64 KiB: each read is a hop to a
    worker thread, and 256 KiB keeps the memory held per download in flight small."""

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


class ProjectPages:
    """``/simple/<project>/`` as an ASGI app (a ``Route``'s endpoint may be one): the page installers
    ask for most, answered without the wrapping Starlette gives each request of a function endpoint
    (its errors still reach the app's exception handlers)."""

    def __init__(self, handlers: SimpleRoutes) -> None:
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handlers.project(Request(scope, receive))
        await response(scope, receive, send)


def routes_for(handlers: SimpleRoutes, prefix: str = "") -> list[Route]:
    return [
        Route(prefix + "/simple/{project}/", ProjectPages(handlers), methods=["GET", "HEAD"]),  # first: asked most
        Route(prefix + "/simple/", handlers.root),
        Route(prefix + "/simple/{project}", handlers.project_without_slash),
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


def create_app(config: Config) -> Starlette:
    """The mirror's web app for ``config`` (its repo, store and branch; features add their routes here)."""
    view = MirrorView(MetadataRepo(config.repo), open_store(config), config.branch)
    routes = [*routes_for(SimpleRoutes(view)), *routes_for(SnapshotRoutes(view), "/snapshot/{rev}")]
    routes += checkpoint_routes(view, config)
    app = Starlette(routes=routes)
    app.state.view = view
    app.state.config = config
    from .proxy_routes import install as install_proxy  # here: it builds on this module's handlers

    install_proxy(app, config, view)
    install_hosted(app, config)
    web.install(app, config)  # last: its request metrics and access log wrap every answer (a 401 too)
    return app


def raise_open_file_limit(wanted: int = 65536) -> None:
    """Each open connection is a file descriptor; a common soft limit of 1024 would refuse the 1,000th client."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str | None = None,
    access_log: bool | None = None,
) -> None:
    """Run the app under uvicorn (which picks uvloop and httptools when installed); each argument
    left None comes from ``serve:`` in mirror.yaml. Several workers each build the app from the
    same configuration file (``app_from_environment``).

    No ``X-Forwarded-*`` handling (``proxy_headers``): the app's URLs are relative and it reads no
    client address, so behind a reverse proxy or not, that layer would only cost every request.
    """
    import uvicorn

    settings = config.serve
    workers = workers or settings.workers
    level = log_level or settings.log_level
    options: dict[str, object] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_config": logs.log_config(level, settings.access_log if access_log is None else access_log),
        "log_level": level,
        "access_log": False,  # written by metrics.RequestMetrics, with the bytes sent
        "proxy_headers": False,
        "backlog": 2048,
        "timeout_keep_alive": 30,
    }
    raise_open_file_limit()
    if workers > 1:
        os.environ[CONFIG_VARIABLE] = str(config.source.resolve()) if config.source else ""
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(config), **options)  # type: ignore[arg-type]


CONFIG_VARIABLE = "GITMIRROR_SERVE_CONFIG"


def app_from_environment() -> Starlette:
    """The app of one worker process: ``create_app`` of the configuration ``serve`` was started with."""
    from ..sync.config import load

    path = os.environ.get(CONFIG_VARIABLE)
    return create_app(load(Path(path) if path else None))
