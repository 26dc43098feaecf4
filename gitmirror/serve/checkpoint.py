"""``GET /checkpoint``: the mirror's signed statement of where ``main`` stands (docs/signing.md);
``POST /checkpoint/cosignature``: a witness hands in its cosignature of it.

Answered when ``signing.key`` (or the repository's ``user.signingKey``) names the mirror's key; the
note changes with each commit and never otherwise, so it is cached by the tip. A submitted
cosignature is kept (one file per witness, the newest replacing the one before) only when it is a
valid ``cosignature/v1`` of the current checkpoint by a witness of ``signing.witnesses``: the
cosignatures directory then holds nothing anyone else wrote, and stays one note per witness.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..model import signed_note
from ..model.cosignature import MAX_CLOCK_SKEW, witnessed
from ..model.signed_note import MAX_NOTE_BYTES, Note, NoteError, Signature
from ..model.ssh_signatures import AllowedSigners
from ..storage.checkpoint import checkpoint_at, default_origin, signed_checkpoint
from ..storage.signing import check_key
from ..sync.config import Config
from .view import MirrorView

NOTE_TYPE = "text/plain; charset=utf-8"


def checkpoint_routes(view: MirrorView, config: Config) -> list[Route]:
    """The ``/checkpoint`` route over ``view``, signed with the configured key."""
    key_path = config.signing.key or view.repo.signing_policy().key
    if key_path is None:
        return [Route("/checkpoint", _unsigned), Route("/checkpoint/cosignature", _unsigned, methods=["POST"])]
    private_key = check_key(key_path)
    origin = config.signing.name or default_origin(private_key.public_key())
    cosigned = config.signing.cosignatures

    witness_keys = _witness_keys(config.signing.witnesses)

    async def checkpoint(request: Request) -> Response:
        tip = view.tip()
        if tip is None:
            return PlainTextResponse(f"{view.branch} has no commits yet\n", status_code=404)
        note = signed_checkpoint(checkpoint_at(view.repo, view.branch, origin, tip), private_key, cosigned)
        return Response(note.render(), media_type=NOTE_TYPE, headers={"cache-control": "no-cache"})

    async def cosignature(request: Request) -> Response:
        if witness_keys is None or cosigned is None:
            return _line(404, "this mirror takes no cosignatures: signing.witnesses is not set")
        body = await _bounded_body(request, MAX_NOTE_BYTES)
        if body is None:
            return _line(413, f"a cosigned note is at most {MAX_NOTE_BYTES} bytes")
        try:
            note = signed_note.parse(body)
        except NoteError as exc:
            return _line(400, str(exc))
        tip = view.tip()
        current = checkpoint_at(view.repo, view.branch, origin, tip) if tip is not None else None
        if current is None or note.text != current.text():
            where = f"size {current.size}, commit {current.commit[:12]}" if current else "none yet"
            return _line(409, f"the note is not this mirror's current checkpoint ({where}): cosign /checkpoint again")
        found = witnessed(note, witness_keys, int(time.time()) + MAX_CLOCK_SKEW, origin)
        if not found:
            return _line(403, "no valid cosignature by a witness of signing.witnesses")  # not the server's path
        await run_in_threadpool(_keep, cosigned, note.text, found)
        return _line(200, f"kept the cosignature of {', '.join(sorted(found))} for checkpoint size {current.size}")

    return [Route("/checkpoint", checkpoint), Route("/checkpoint/cosignature", cosignature, methods=["POST"])]


def _witness_keys(path: Path | None) -> list[tuple[str, Ed25519PublicKey]] | None:
    """The witnesses' Ed25519 keys of ``signing.witnesses`` (checked by ``serve`` before it starts)."""
    if path is None:
        return None
    return AllowedSigners.parse(path.read_text(encoding="utf-8"), str(path)).ed25519_keys()


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is announced or found to be longer than ``limit``."""
    announced = request.headers.get("content-length")
    if announced is not None and (not announced.isdigit() or int(announced) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _keep(directory: Path, text: str, cosignatures: dict[str, Signature]) -> None:
    """Each witness's cosignature as ``witness-<hash of its name>.note``, replaced atomically."""
    from .site_writer import write_if_changed  # here: the render's module (and its process pool) is no start-up cost

    for name, signature in cosignatures.items():
        path = directory / f"witness-{hashlib.sha256(name.encode()).hexdigest()[:16]}.note"
        write_if_changed(path, Note(text, (signature,)).render().encode())


def _line(status: int, line: str) -> Response:
    return PlainTextResponse(line + "\n", status_code=status)


async def _unsigned(request: Request) -> Response:
    return _line(404, "this mirror publishes no checkpoint: it has no signing key")
