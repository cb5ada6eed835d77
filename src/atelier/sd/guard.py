"""The door every request passes: auth, body size and time limits, metrics and a log line.

A plain ASGI middleware (not Starlette's `BaseHTTPMiddleware`), because it has to own
`receive`: a `Content-Length` check alone lets a chunked body of any size through, and a
client that sends its body slowly would hold a connection for ever. The whole body is
read here, counted as it arrives, within one deadline, and handed on in one message;
after it, the app's `receive` gets the server's own messages, so routes still see
`http.disconnect` when the client goes away.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from atelier.sd.metrics import Metrics
from atelier.sd.settings import ServeSettings

log = logging.getLogger("atelier.sd.http")
OPEN_PATHS = frozenset({"/health"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Credentials:
    """The app code (header, Bearer, or Basic password) and A1111 `--api-auth` pairs,
    all compared in constant time."""

    def __init__(self, app_code: str | None, pairs: list[tuple[str, str]]) -> None:
        self.code = app_code.encode("utf-8") if app_code else None
        self.pairs = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in pairs]

    @property
    def required(self) -> bool:
        return self.code is not None or bool(self.pairs)

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        given_code: bytes | None = headers.get(b"x-apig-appcode") or None
        user = password = None
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given_code = given_code or value.strip()
        elif scheme.lower() == b"basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except ValueError:
                user = password = None
        ok = False
        if self.code is not None:
            for candidate in (given_code, password):
                ok |= hmac.compare_digest(candidate or b"", self.code)
        for u, p in self.pairs:
            ok |= hmac.compare_digest(user or b"", u) & hmac.compare_digest(password or b"", p)
        return ok


async def _json(send: Send, status: int, body: dict[str, Any], close: bool = False) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="atelier"'))
    if close:  # the rest of the request was not read: this connection cannot be reused
        headers.append((b"connection", b"close"))
    data = json.dumps(body).encode("utf-8")
    headers.append((b"content-length", str(len(data)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class BodyTooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.credentials = Credentials(settings.app_code, settings.api_auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 0}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("auth" if status["code"] == 401 else "other")
            self.metrics.requests.labels(label, str(status["code"])).inc()
            log.info(
                json.dumps(
                    {
                        "event": "http",
                        "method": scope.get("method"),
                        "path": scope.get("path", "")[:200],  # JSON-escaped: no log forging
                        "status": status["code"],
                        "ms": round((time.perf_counter() - t0) * 1000, 1),
                    }
                )
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.settings
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        if scope.get("root_path") and path.startswith(scope["root_path"]):
            path = path[len(scope["root_path"]) :]
        # CORS preflights carry no credentials by design; the CORS layer outside answers them
        if (
            self.credentials.required
            and path not in OPEN_PATHS
            and not self.credentials.allows(headers)
        ):
            await _json(
                send,
                401,
                {
                    "error": "missing or wrong app code: send X-Apig-AppCode: CODE "
                    "or Authorization: Bearer CODE"
                },
                close=True,
            )
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > s.max_body_bytes):
            await _json(send, 413, {"error": f"request body over {s.max_body_bytes} bytes"}, True)
            return
        try:
            body = await self._read_body(receive)
        except BodyTooLarge:
            await _json(send, 413, {"error": f"request body over {s.max_body_bytes} bytes"}, True)
            return
        except TimeoutError:
            await _json(
                send,
                408,
                {"error": f"the request body did not arrive within {s.body_timeout_s:g} s"},
                True,
            )
            return
        if body is None:  # the client left before sending its body
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, counted as it arrives and due within one deadline (a client
        dripping one byte a second must not hold a connection for ever)."""
        limit, chunks, size = self.settings.max_body_bytes, [], 0
        deadline = time.monotonic() + self.settings.body_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(receive(), left)
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
