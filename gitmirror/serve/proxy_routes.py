"""The pull-through proxy's routes (``proxy:`` in ``mirror.yaml``; docs/proxy.md).

They answer ``/simple/``, ``/simple/<project>/`` and ``/files/...`` before the mirror's own
routes: pages from ``gitmirror.proxy`` (the record plus upstream's offers), files from the store
or streamed from their one download. Anything the proxy has no say on (a committed file, a
snapshot) goes to the mirror's routes unchanged.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..model.names import UnsafeNameError, check_filename, normalize
from ..proxy.answers import BranchReader, Stored, Unavailable
from ..proxy.pullthrough import PullThrough
from ..proxy.stream import DownloadFailed, SharedBody, read_blob
from ..storage.blobs import Blobs
from ..sync.config import Config
from . import index
from .metrics import PROXY_UPSTREAM_ERRORS
from .server import TIP_MAX_AGE, BlobResponse, SimpleRoutes, file_headers, page_response
from .view import MirrorView, _page

#: the header a page served as recorded while upstream cannot be asked carries
STALE_HEADER = "X-Gitmirror-Stale"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ProxyRoutes:
    """Request handlers over a ``PullThrough``; the mirror's own handlers for the rest."""

    def __init__(self, proxy: PullThrough, mirror: SimpleRoutes) -> None:
        self.proxy = proxy
        self.mirror = mirror

    async def root(self, request: Request) -> Response:
        media_type = index.choose_format(request.headers.get("accept"))
        if media_type is None:
            return await self.mirror.root(request)  # its 406
        names = await run_in_threadpool(self.proxy.recorded_names)  # a new tip's names come from git: off the loop
        body = index.root_json(names) if media_type == index.JSON_TYPE else index.root_html(names)
        return page_response(request, _page(body, media_type), TIP_MAX_AGE)

    async def project(self, request: Request) -> Response:
        raw = request.path_params["project"]
        media_type = index.choose_format(request.headers.get("accept"))
        try:
            name = normalize(raw)
        except UnsafeNameError:
            name = None
        if name is None or name != raw or media_type is None:
            return await self.mirror.project(request)  # its 404, 301 or 406
        try:
            served = await self.proxy.project(name)
        except Unavailable as exc:
            _count_upstream_error(exc.status)
            return PlainTextResponse(exc.line, status_code=exc.status)
        manifest = served.manifest
        body = index.project_json(manifest) if media_type == index.JSON_TYPE else index.project_html(manifest)
        response = page_response(request, _page(body, media_type), TIP_MAX_AGE)
        if served.stale is not None:
            PROXY_UPSTREAM_ERRORS.labels(reason="stale").inc()
            response.headers[STALE_HEADER] = served.stale
            response.headers["Warning"] = '110 gitmirror "Response is Stale"'
        return response

    async def file(self, request: Request) -> Response:
        project, filename = request.path_params["project"], request.path_params["filename"]
        try:
            name = normalize(project)
            check_filename(filename.removesuffix(".metadata"))
        except UnsafeNameError:
            return await self.mirror.file(request)
        if name != project:
            return await self.mirror.file(request)
        try:
            answer = await self.proxy.file(name, filename)
        except Unavailable as exc:
            _count_upstream_error(exc.status)
            return PlainTextResponse(exc.line, status_code=exc.status)
        if answer is None:
            return await self.mirror.file(request)
        headers = file_headers(answer.sha256)
        if answer.sha256 in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if isinstance(answer, Stored):
            return await _stored(self.proxy.store, answer.sha256, filename, headers)
        if answer.size is not None:
            headers["Content-Length"] = str(answer.size)
        return StreamingResponse(_body(answer.body, filename), media_type="application/octet-stream", headers=headers)


async def _stored(store: Blobs, sha256: str, filename: str, headers: dict[str, str]) -> Response:
    """A stored blob: sent by file when the store keeps it on this machine, else read through the store."""
    missing = PlainTextResponse(f"{filename} is recorded but its blob is not in this store", status_code=404)
    path = store.local_file(sha256)
    if path is not None:
        try:
            stat_result = os.stat(path)
        except OSError:
            return missing
        return BlobResponse(path, media_type="application/octet-stream", headers=headers, stat_result=stat_result)
    try:
        size = await asyncio.to_thread(store.size, sha256)
        handle = await asyncio.to_thread(store.open, sha256)
    except FileNotFoundError:
        return missing
    headers = {**headers, "Content-Length": str(size)}
    return StreamingResponse(read_blob(handle), media_type="application/octet-stream", headers=headers)


async def _body(body: SharedBody, filename: str) -> AsyncIterator[bytes]:
    """The bytes as they arrive; a failed download ends the response short (the client sees an error)."""
    try:
        async for chunk in body.stream():
            yield chunk
    except DownloadFailed as exc:
        PROXY_UPSTREAM_ERRORS.labels(reason="download").inc()
        _log(f"proxy: aborted the response for {filename}: {exc}")
        raise


def _count_upstream_error(status: int) -> None:
    """``/metrics``: an answer the proxy could not give because of upstream (502 failed, 504 too slow)."""
    if status in (502, 504):
        PROXY_UPSTREAM_ERRORS.labels(reason="timeout" if status == 504 else "failed").inc()


def _count_failure(reason: str) -> None:
    """``/metrics``: a background refresh upstream failed (nobody's answer waited for it)."""
    PROXY_UPSTREAM_ERRORS.labels(reason=reason).inc()


async def _start_workers(proxy: PullThrough) -> None:
    """The download processes started, and the server's own transport made, before the first request
    needs them; a failure is logged and the server runs on (its requests then fail with the same line)."""
    try:
        await proxy.upstream.start_workers()
    except Exception as exc:  # noqa: BLE001 - logged; the server runs on
        _log(f"proxy: cannot start the download processes ahead of requests: {exc}")


def _reader(view: MirrorView) -> BranchReader:
    """The tip of ``view``'s branch, read through its cache."""
    return BranchReader(lambda name: view.manifest(view.tip(), name), lambda: view.projects(view.tip()))


def install(app: Starlette, config: Config, view: MirrorView) -> None:
    """With ``proxy:`` configured: the proxy's routes before the mirror's, started and stopped with the app."""
    if config.proxy is None:
        return
    serving = _reader(view)
    recording = _reader(MirrorView(view.repo, view.store, config.review.branch)) if config.review.enabled else serving
    proxy = PullThrough(config, view.repo, view.store, recording, serving, log=_log, count_failure=_count_failure)
    handlers = ProxyRoutes(proxy, SimpleRoutes(view))
    app.router.routes[0:0] = [
        Route("/simple/", handlers.root),
        Route("/simple/{project}/", handlers.project),
        Route("/files/{project}/{filename}", handlers.file),
    ]
    app.state.proxy = proxy
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with previous(app) as state:
            await proxy.start()
            starting = asyncio.create_task(_start_workers(proxy))  # in the background: startup does not wait
            try:
                yield state
            finally:
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                await proxy.stop()

    app.router.lifespan_context = lifespan
