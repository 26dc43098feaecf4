"""``GET /checkpoint``: the mirror's signed statement of where ``main`` stands (docs/signing.md).

Answered when ``signing.key`` (or the repository's ``user.signingKey``) names the mirror's key; the
note changes with each commit and never otherwise, so it is cached by the tip.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..storage.checkpoint import checkpoint_at, default_origin, signed_checkpoint
from ..storage.signing import check_key
from ..sync.config import Config
from .view import MirrorView

NOTE_TYPE = "text/plain; charset=utf-8"


def checkpoint_routes(view: MirrorView, config: Config) -> list[Route]:
    """The ``/checkpoint`` route over ``view``, signed with the configured key."""
    key_path = config.signing.key or view.repo.signing_policy().key
    if key_path is None:
        return [Route("/checkpoint", _unsigned)]
    private_key = check_key(key_path)
    origin = config.signing.name or default_origin(private_key.public_key())
    cosigned = config.signing.cosignatures

    async def checkpoint(request: Request) -> Response:
        tip = view.tip()
        if tip is None:
            return PlainTextResponse(f"{view.branch} has no commits yet\n", status_code=404)
        note = signed_checkpoint(checkpoint_at(view.repo, view.branch, origin, tip), private_key, cosigned)
        return Response(note.render(), media_type=NOTE_TYPE, headers={"cache-control": "no-cache"})

    return [Route("/checkpoint", checkpoint)]


async def _unsigned(request: Request) -> Response:
    return PlainTextResponse("this mirror publishes no checkpoint: it has no signing key\n", status_code=404)
