"""Tip pages answered inside uvicorn's HTTP protocol, before any ASGI machinery runs.

A cached ``/simple/<project>/`` page costs microseconds to find, but an ASGI request costs far more
around it: a scope, a request/response cycle, an asyncio task and event, message dicts and header
checks. Installers ask for these pages more than for anything else, so ``gitmirror serve`` uses this
subclass of uvicorn's httptools protocol: a plain ``GET`` or ``HEAD`` of a page ``tip_page`` finds is
written to the transport as prebuilt bytes from the request parser's callbacks. Everything else
(redirects, 404, 406, snapshots, files, errors, and any request this path is unsure about) goes down
uvicorn's ordinary ASGI path unchanged.

What is sent is what the Starlette route sends: ``page_answer`` is the only definition of status,
headers and body, and the bytes around it follow ``RequestResponseCycle.send`` (status line,
uvicorn's ``date``/``server`` headers first, ``connection: close`` when the connection will close,
no body for ``HEAD``). It is built on uvicorn's internals, written against uvicorn 0.54 (older ones
decide keep-alive differently): tests/test_server_fastpath.py compares its answers with the ordinary
path's byte for byte, so a uvicorn that behaves otherwise fails there, and ``server.serve`` falls
back to uvicorn's own protocol when this module cannot be imported.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .server import TIP_MAX_AGE, MirrorView, page_answer, tip_page

_PREFIX = b"/simple/"
_MAX_ANSWERS = 4096

# (status line, header lines without uvicorn's defaults, body): per page content, media type and If-None-Match
Encoded = tuple[bytes, bytes, bytes]


class TipPageProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a direct answer for cached tip pages (see the module docstring).

    Requests are answered in order: the direct path is taken only while no ASGI request is running or
    queued on the connection and the transport accepts writes (a slow reader gets uvicorn's own flow
    control on the ordinary path). A direct answer is computed when the headers are complete and
    written when the message is, so any request body is read and dropped first, as before.
    """

    view: ClassVar[MirrorView]
    answers: ClassVar[dict[tuple[str, str, str | None], Encoded]]
    _defaults: ClassVar[tuple[object, bytes]] = (None, b"")

    @classmethod
    def serving(cls, view: MirrorView) -> type[TipPageProtocol]:
        """A protocol class bound to ``view`` (uvicorn instantiates the class it is given per connection)."""
        return type(cls.__name__, (cls,), {"view": view, "answers": {}})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: tuple[bytes, bool] | None = None  # the answer to write, and whether to close after it
        # access log lines, a root path and the concurrency limit's 503 live on the ordinary path only
        logs_access = self.access_log and self.access_logger.isEnabledFor(logging.INFO)
        self._may_answer = not (logs_access or self.root_path or self.limit_concurrency is not None)

    def on_headers_complete(self) -> None:
        self._direct = self._direct_answer()
        if self._direct is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._direct is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._direct is None:
            super().on_message_complete()
            return
        answer, closes = self._direct
        self._direct = None
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if closes:
            self.transport.close()
        self.on_response_complete()  # uvicorn's bookkeeping: request count, reading resumed, keep-alive timer

    def _direct_answer(self) -> tuple[bytes, bool] | None:
        """The whole answer to the request just parsed, or None for the ordinary ASGI path."""
        url = self.url
        if not url.startswith(_PREFIX) or not url.endswith(b"/") or b"?" in url or b"%" in url:
            return None
        method = self.parser.get_method()
        if (
            (method != b"GET" and method != b"HEAD")
            or not self._may_answer
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.pipeline
            or self.flow.write_paused
            or self.expect_100_continue
            or self.parser.should_upgrade()
        ):
            return None
        accept = if_none_match = None
        for name, value in self.headers:
            if name == b"accept" and accept is None:  # the first one, as Starlette's headers.get
                accept = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        page = tip_page(self.view, url[len(_PREFIX) : -1].decode("latin-1"), accept)
        if page is None:
            return None
        key = (page.etag, page.media_type, if_none_match)
        encoded = self.answers.get(key)
        if encoded is None:
            encoded = self._remember(key, _encode(*page_answer(page, TIP_MAX_AGE, if_none_match)))
        status_line, header_lines, body = encoded
        closes = self.parser.get_http_version() == "1.0" or not self.parser.should_keep_alive()
        parts = [status_line, self._default_header_lines(), header_lines]
        if closes:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if method == b"GET":
            parts.append(body)
        return b"".join(parts), closes

    def _default_header_lines(self) -> bytes:
        """uvicorn's ``date`` and ``server`` headers, encoded once per list (uvicorn replaces it every second)."""
        defaults = self.server_state.default_headers
        cached, lines = TipPageProtocol._defaults
        if cached is not defaults:
            lines = b"".join(name + b": " + value + b"\r\n" for name, value in defaults)
            TipPageProtocol._defaults = (defaults, lines)
        return lines

    def _remember(self, key: tuple[str, str, str | None], encoded: Encoded) -> Encoded:
        """Cache an encoded answer; bounded, since If-None-Match values come from clients."""
        if len(self.answers) >= _MAX_ANSWERS:
            self.answers.clear()
        self.answers[key] = encoded
        return encoded


def _encode(status: int, headers: dict[str, str], body: bytes) -> Encoded:
    lines = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
    return STATUS_LINE[status], lines, body
