"""``/files/<project>/<filename>.provenance``: a file's PEP 740 provenance object, served like the file.

From every commit whose manifest records it for the file (the blob its ``provenance`` digest names),
withheld (410) wherever the file is (a takedown, a quarantine), immutable for HTTP caches.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..model.manifest import PROVENANCE_SUFFIX
from .view import MirrorView

MEDIA_TYPE = "application/json"


def provenance_response(
    view: MirrorView, commit: bytes | None, project: str, name: str, request: Request, cache: str
) -> Response:
    """The answer for ``name`` (``<filename>.provenance``) of normalized ``project`` at ``commit``."""
    manifest = view.manifest(commit, project)
    entry = manifest.files.get(name.removesuffix(PROVENANCE_SUFFIX)) if manifest else None
    if entry is None or entry.provenance is None:
        return PlainTextResponse("no such file in this mirror", status_code=404)
    withheld = view.withheld(commit, project, entry)
    if withheld is not None:
        return PlainTextResponse(withheld, status_code=410)
    headers = {"ETag": f'"{entry.provenance}"', "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if entry.provenance in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    try:
        data = view.store.read_bytes(entry.provenance)
    except OSError:
        return PlainTextResponse(f"{name} is recorded but its blob is not in this store", status_code=404)
    return Response(data, media_type=MEDIA_TYPE, headers=headers)
