"""HTTP basic authentication with API tokens (user ``__token__``), and the private-index mode.

Uploads always need a token; with ``hosted.read_auth`` every read does too (``ReadAuth``, an ASGI
middleware in front of the whole app), and every answer is ``Cache-Control: private``. A read
without credentials answers 401 with a challenge, so pip and uv send the credentials of the index
URL (or their keyring's); wrong or revoked ones 403.
"""

from __future__ import annotations

import base64
import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tokens import TokenError, TokenStore

TOKEN_USER = "__token__"
REALM = 'Basic realm="gitmirror", charset="UTF-8"'
UNAVAILABLE = "tokens cannot be checked: the server's token file is damaged (its log says why)"
log = logging.getLogger("gitmirror.serve")


class TokensUnavailable(Exception):
    """The token file cannot be read: every check fails closed (503) until the operator repairs it."""


def credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) of a basic ``Authorization`` header, or None when there is none or it is malformed."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 1000:
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:  # not base64 (binascii.Error), bytes beyond ASCII, or not UTF-8 (UnicodeError)
        return None
    return (user, password) if colon else None


def token_name(tokens: TokenStore, authorization: str | None) -> str | None:
    """The name of the active token the header carries as ``__token__``'s password, else None;
    ``TokensUnavailable`` when the token file cannot be read (logged)."""
    found = credentials(authorization)
    if found is None or found[0] != TOKEN_USER:
        return None
    try:
        return tokens.check(found[1])
    except (TokenError, OSError) as exc:
        log.error("%s", exc)
        raise TokensUnavailable from None


class ReadAuth:
    """Every request needs a valid token (the upload route checks its own: 403 without a challenge)."""

    def __init__(self, app: ASGIApp, tokens: TokenStore, open_paths: tuple[str, ...] = ("/legacy", "/health")) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths

    def _is_open(self, path: str) -> bool:
        """``path`` is one of ``open_paths`` or below one (``/health/ready``), never merely spelled
        like one (``/healthy``): a route added later stays private unless it is listed."""
        return any(path == open_path or path.startswith(open_path + "/") for open_path in self.open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(str(scope["path"])):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        if authorization is None:
            response = PlainTextResponse(
                "this index needs a token: user __token__, the token as password", 401, {"WWW-Authenticate": REALM}
            )
        else:
            try:
                name = token_name(self.tokens, authorization)
            except TokensUnavailable:
                response = PlainTextResponse(UNAVAILABLE, 503)
            else:
                if name is not None:
                    await self.app(scope, receive, _private(send))
                    return
                response = PlainTextResponse("invalid or revoked token (user __token__, the token as password)", 403)
        await response(scope, receive, send)


def _private(send: Send) -> Send:
    """``send`` with every answer's ``Cache-Control`` made ``private``: a shared cache (a caching
    proxy, a CDN) may keep a ``public`` answer to an authenticated request and hand it to anyone."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["cache-control"] = headers.get("cache-control", "private").replace("public", "private")
        await send(message)

    return sending
