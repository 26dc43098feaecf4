"""The upload API at ``/legacy/`` (as the public index has it) and the private-index mode, added to
the server's app by ``install`` (docs/hosted.md).

The body is parsed as it streams (Starlette's multipart parser spools the file to a temporary file
on disk past 1 MiB) and counted: past ``hosted.max_upload_size`` the upload stops with 400, so no
body, however large, sits in memory. Checking and recording run in a worker thread (hashing, zip checks
and the writer lock block).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..model.names import UnsafeNameError, normalize
from ..model.provenance import ProvenanceError, from_attestations
from ..storage.repo import MetadataRepo
from ..storage.store import BlobStore
from ..sync.config import Config
from .auth import UNAVAILABLE, ReadAuth, TokensUnavailable, token_name
from .record import Received, record
from .tokens import TokenStore
from .upload import UploadForm, UploadRefused, bad, check_file, check_form

MAX_FIELD_BYTES = 8 << 20  # a long description is the largest field
#: all fields of one form together (the file is spooled to disk, fields are held in memory)
MAX_FIELDS_BYTES = 2 * MAX_FIELD_BYTES
TOKEN_NEEDED = "uploads need a valid token: HTTP basic auth, user __token__, the token as password"
#: set by ``serve --follow`` to the remote it follows (read by every worker): such a server takes no upload
FOLLOWS_VARIABLE = "GITMIRROR_SERVE_FOLLOWS"


def install(app: Starlette, config: Config) -> None:
    """Add the upload routes to ``app`` and, with ``hosted.read_auth``, require tokens for reads."""
    tokens = TokenStore(config.repo)
    uploads = Uploads(config, app.state.view.store, tokens, os.environ.get(FOLLOWS_VARIABLE) or None)
    for path in ("/legacy/", "/legacy"):
        app.router.routes.append(Route(path, uploads.upload, methods=["POST"]))
    if config.hosted.read_auth:
        app.add_middleware(ReadAuth, tokens=tokens)


class _TooLarge(Exception):
    pass


class UploadFormParser(MultiPartParser):
    """Starlette's multipart parser with the fields (not the file) counted together: past
    ``MAX_FIELDS_BYTES`` the form is refused, so what sits in memory is bounded whatever
    ``hosted.max_upload_size`` lets through (a thousand fields of 8 MiB would otherwise fit in one)."""

    fields_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is None:
            self.fields_bytes += end - start
            if self.fields_bytes > MAX_FIELDS_BYTES:
                raise MultiPartException(f"its fields are over {MAX_FIELDS_BYTES} bytes in all")
        super().on_part_data(data, start, end)


async def _counted(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    """``stream``, stopped with ``_TooLarge`` once more than ``limit`` bytes arrived."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        yield chunk


class Uploads:
    def __init__(self, config: Config, store: BlobStore, tokens: TokenStore, follows: str | None = None) -> None:
        self.config = config
        self.store = store
        self.tokens = tokens
        #: the remote ``serve --follow`` follows: a commit here would part this branch from it for good
        self.follows = follows

    async def upload(self, request: Request) -> Response:
        try:
            line = await self._upload(request)
        except UploadRefused as exc:
            return PlainTextResponse(exc.line + "\n", status_code=exc.status)
        return PlainTextResponse(line + "\n")

    async def _upload(self, request: Request) -> str:
        try:
            uploader = token_name(self.tokens, request.headers.get("authorization"))
        except TokensUnavailable:
            raise UploadRefused(503, UNAVAILABLE) from None
        if uploader is None:
            raise UploadRefused(403, TOKEN_NEEDED)
        if self.follows is not None:
            raise UploadRefused(
                403, f"this server follows {self.follows} (serve --follow): upload to the mirror it follows"
            )
        limit = self.config.hosted.max_upload_size
        announced = request.headers.get("content-length")
        if announced is not None and (not announced.isdigit() or int(announced) > limit):
            raise bad(f"upload of {announced} bytes is over the limit of {limit} bytes (hosted.max_upload_size)")
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise bad("an upload is a multipart/form-data POST (as twine and uv publish send it)")
        parser = UploadFormParser(
            request.headers,
            _counted(request.stream(), limit),
            max_files=2,  # the file and a detached GPG signature (twine --sign), which is ignored
            max_fields=1000,
            max_part_size=MAX_FIELD_BYTES,
        )
        try:
            form = await parser.parse()
        except _TooLarge:
            raise bad(f"upload over the limit of {limit} bytes (hosted.max_upload_size)") from None
        except ClientDisconnect:
            raise bad("the upload was interrupted: the client disconnected") from None
        except MultiPartException as exc:
            raise bad(f"malformed upload form: {exc.message}") from None
        try:
            fields: dict[str, str] = {}
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields.setdefault(key, value)
            sent = [key for key, value in form.multi_items() if isinstance(value, UploadFile)]
            if sent.count("content") > 1 or set(sent) - {"content", "gpg_signature"}:
                raise bad("an upload carries one file, content (and at most a gpg_signature, which is ignored)")
            content = form.get("content")
            content_file = content if isinstance(content, UploadFile) else None
            self._check_hosted(fields.get("name", ""))
            checked = check_form(fields, content_file.filename if content_file else None)
            assert content_file is not None  # check_form refuses an upload without a file
            provenance = _provenance(fields.get("attestations", ""), checked, uploader)
            return await asyncio.to_thread(self._record, checked, content_file, uploader, provenance)
        finally:
            await form.close()

    def _check_hosted(self, name: str) -> None:
        try:
            project = normalize(name.strip())
        except UnsafeNameError:
            return  # check_form says why
        if not self.config.hosted.is_hosted(project):
            raise UploadRefused(
                403,
                f"{project} is not hosted here: add it (or a matching glob) to hosted: in mirror.yaml to allow uploads",
            )

    def _record(self, form: UploadForm, content: UploadFile, uploader: str, provenance: bytes | None) -> str:
        size, metadata, requires_python = check_file(form, content.file)
        repo = MetadataRepo(self.config.repo)
        try:
            received = Received(form, content.file, size, metadata, requires_python, uploader, provenance)
            return record(repo, self.store, self.config.branch, self.config.hosted, received)
        finally:
            repo.close()


def _provenance(attestations: str, form: UploadForm, uploader: str) -> bytes | None:
    """The PEP 740 provenance object of the upload's ``attestations`` field (None: none sent)."""
    if attestations.strip() in ("", "[]"):
        return None
    try:
        return from_attestations(attestations, form.filename, form.sha256, uploader)
    except ProvenanceError as exc:
        raise bad(str(exc)) from None
