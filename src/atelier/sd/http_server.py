"""The HTTP server around the app: uvicorn, with the timeouts it lacks.

uvicorn arms no timer before a request's headers are complete: a client that connects and
sends nothing, or half a request line, holds its socket for ever (1,100 such sockets were
held 31 s+ in a trial, and would have been held until the process ended). Its h11 protocol
is subclassed here to close a connection whose headers are not complete within
`header_timeout_s` from its first byte (or from connect). Body deadlines are the guard
middleware's job; idle keep-alive connections use uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from atelier.core.errors import AtelierError
from atelier.sd.settings import ServeSettings

MAX_HEADER_BYTES = 16 * 1024  # request line + headers; more is a 400 (h11 refuses it)


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers(idle=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self, idle: bool = False) -> None:
        """Arm the deadline while the peer owes us request headers; an idle keep-alive
        connection (nothing received since the last response) is uvicorn's to time out."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and not idle:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.header_timeout_s, self._headers_overdue
                )
        else:
            self._cancel_header_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """Bind now, so a busy port or an unknown host is one clear error before the model
    loads, not a uvicorn log line after it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise AtelierError(f"--host {host}: cannot resolve it ({e})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise AtelierError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
            "pick a free port or another address"
        ) from None
    sock.set_inheritable(True)
    return sock


def make_server(app: Any, settings: ServeSettings) -> uvicorn.Server:
    protocol = type(
        "AtelierHTTP", (HeaderTimeoutProtocol,), {"header_timeout_s": settings.header_timeout_s}
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        ssl_keyfile=settings.tls_keyfile,
        ssl_certfile=settings.tls_certfile,
        root_path=settings.root_path,
        log_level="warning",
    )
    return uvicorn.Server(config)
