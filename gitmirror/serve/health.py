"""``/health``: liveness (the process answers) and readiness (it can serve what it promises).

Ready means the metadata repository's branch and its tip commit can be read and the blob store
answers (its directory is there and readable, or its bucket answers a request): a load balancer
takes the instance out of rotation with the reason, instead of users meeting 404s for files the
index lists. Cheap enough for a load balancer's frequent probes.
"""

from __future__ import annotations

import logging
import os

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..storage.store import BlobStore
from .view import MirrorView

log = logging.getLogger("gitmirror.serve")

PROBE_SHA256 = "0" * 64  # a name no blob has: asking for it shows the store answers


def not_ready_reason(view: MirrorView) -> str | None:
    """Why the server cannot serve now, in one line, or None when it can."""
    repo_head = view.repo.path / "HEAD"
    if not repo_head.is_file():
        return f"metadata repository {view.repo.path} is not reachable"
    try:
        tip = view.tip()
        if tip is not None and not view.repo.has_object(tip):
            return f"branch {view.branch} cannot be read: its tip {tip.decode()[:12]} is not in the repository"
    except (OSError, KeyError, ValueError) as exc:
        return f"branch {view.branch} cannot be read: {exc}"
    store = view.store
    if isinstance(store, BlobStore):
        if not store.blobs_dir.is_dir() or not os.access(store.blobs_dir, os.R_OK | os.X_OK):
            return f"blob store {store.root} is not reachable"
        return None
    try:
        store.has(PROBE_SHA256)  # one cheap request: does the bucket answer?
    except Exception as exc:  # any failure of the object store's client means "not ready"
        return f"blob store {store.location} is not reachable: {' '.join(str(exc).split())[:200]}"
    return None


async def health(request: Request) -> Response:
    """``/health``: 200 while the process answers; ``/health?ready=1`` is ``/health/ready``."""
    if request.query_params.get("ready") not in (None, "", "0"):
        return await ready(request)
    return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})


async def ready(request: Request) -> Response:
    """``/health/ready``: 200 ``ready``, or 503 with the reason."""
    reason = not_ready_reason(request.app.state.view)
    if reason is not None:
        if request.app.state.config.hosted.read_auth:  # a private index names no paths to anonymous probes
            log.warning("not ready: %s", reason)
            reason = "the repository or the store cannot be read (the server's log says why)"
        return PlainTextResponse(f"not ready: {reason}\n", status_code=503, headers={"cache-control": "no-store"})
    return PlainTextResponse("ready\n", headers={"cache-control": "no-store"})


def health_routes() -> list[Route]:
    return [Route("/health", health), Route("/health/ready", ready)]
