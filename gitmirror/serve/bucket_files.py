"""Files whose blobs are in a bucket: served (streamed through, or a redirect to a presigned URL) and rendered.

The same answers as a directory store's (``server.SimpleRoutes.file``): the bytes with the
blob's sha256 as ETag and an immutable cache lifetime, 304 for a client that has them, 404 when the
blob is not there. With ``s3: {presign_seconds: N}`` the server sends a 302 to a URL the bucket
answers itself for N seconds, so the bytes never pass through the server; the redirect is not
cached (the URL expires), the file behind it is the same forever.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse

from ..model.manifest import FileEntry
from ..storage.s3store import S3Store
from .view import MirrorView


async def bucket_file(
    view: MirrorView,
    store: S3Store,
    project: str,
    entry: FileEntry,
    digest: str,
    is_metadata: bool,
    etags: str,
    headers: dict[str, str],
) -> Response:
    """The response for blob ``digest`` of ``entry`` (its PEP 658 file when ``is_metadata``); ``etags``
    is the request's If-None-Match, ``headers`` those of a file answer (ETag, Cache-Control)."""
    present = await asyncio.to_thread(store.has, digest)
    kept_in_wheel = None if present or not is_metadata else await view.metadata_in_wheel(project, entry)
    if not present and kept_in_wheel is None:
        return PlainTextResponse(f"{entry.filename} is recorded but its blob is not in this store", status_code=404)
    if digest in etags:
        return Response(status_code=304, headers=headers)
    if kept_in_wheel is not None:
        return Response(kept_in_wheel, media_type="application/octet-stream", headers=headers)
    if store.settings.presign_seconds:
        url = await asyncio.to_thread(store.presigned_url, digest)
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    headers = {**headers, "Content-Length": str(await asyncio.to_thread(store.size, digest))}
    return StreamingResponse(store.stream(digest), media_type="application/octet-stream", headers=headers)


def place_from_bucket(store: S3Store, sha256: str, project: str, target: Path, mode: str) -> int:
    """A static render's file from a bucket store: ``copy`` downloads it to ``target``, ``bucket``
    copies it inside the bucket to ``<prefix>/files/<project>/<filename>`` (what pages rendered with
    ``--base-url`` at the bucket link to). Returns 1 when something was written."""
    if mode == "bucket":
        return int(store.copy_to(sha256, f"files/{project}/{target.name}"))
    if target.is_file() and not target.is_symlink() and target.stat().st_size == store.size(sha256):
        return 0  # a filename always names the same bytes in one mirror
    tmp = target.with_name(f".render-{target.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            for chunk in store.chunks(sha256):
                handle.write(chunk)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return 1
