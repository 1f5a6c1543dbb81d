"""What the API checks before a request reaches a route: the bearer token and the body's size (pure ASGI).

Decisions (issue #16 item 8: a 40 MB body got a 413 and then, for some clients, a reset connection):
- A refused request (401, 413) is answered at once, before its body is read, so a client that sends the
  headers and waits for an answer (`Expect: 100-continue`, or one that sends Content-Length only) sees it.
- Then the body the client is still sending is read and thrown away, up to `4 × max_body_bytes` and while
  it keeps coming (at most `DRAIN_IDLE_S` between pieces), and the connection is closed (`Connection:
  close`). A client that writes its whole body before reading the answer (curl, requests, httpx, a raw
  socket) finds the answer waiting instead of a reset. The answer's last, empty piece is sent only after the
  drain, so the server does not close early; the client has the whole JSON (its Content-Length) before that.
  Beyond the bound the server stops reading and closes: a client streaming without end is cut off rather
  than read forever (uvicorn on its own would keep discarding for as long as bytes arrive).
- The token check comes first, so a caller without the token never makes the server hold a body.
  Tokens are compared as bytes in constant time: a non-ASCII token works, a wrong one is a 401.
- A body within the limit is read here once (it is small by then) and handed to the route unchanged.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DRAIN_FACTOR = 4  # how much of a refused body is read and discarded, in multiples of the limit
DRAIN_IDLE_S = 10.0  # a client silent this long while "sending" its refused body is left


def error_json(message: str, kind: str, code: str) -> bytes:
    """OpenAI's error shape (the same as chat_request.error_body; kept here so this module stands alone)."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def too_large_message(limit: int) -> str:
    return f"The request body is larger than {limit // 2**20} MiB; send fewer or smaller images."


class ApiGuard:
    """Wraps the API app: token first (for /v1/* and /metrics), then the body limit, then the app."""

    def __init__(self, app: App, *, token: str, max_body_bytes: int, drain_idle_s: float = DRAIN_IDLE_S) -> None:
        self.app = app
        self.token = token.encode("utf-8")
        self.max_body_bytes = max_body_bytes
        self.drain_idle_s = drain_idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        guarded = scope["path"].startswith("/v1/") or scope["path"] == "/metrics"
        if self.token and guarded and not self._authorized(headers.get(b"authorization", b"")):
            await self._refuse(receive, send, 401, error_json(
                "Missing or wrong API token: send 'Authorization: Bearer <token>'.", "invalid_request_error",
                "invalid_api_key"), extra=[(b"www-authenticate", b"Bearer")], already=0)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(receive, send, 413, self._too_large(), already=0)
            return
        body, more, received = bytearray(), True, 0
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:  # chunked, or a Content-Length that lied
                await self._refuse(receive, send, 413, self._too_large(), already=received,
                                   more=message.get("more_body", False))
                return
            body.extend(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(bytes(body), receive), send)

    def _authorized(self, given: bytes) -> bool:
        scheme, _, value = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token)

    def _too_large(self) -> bytes:
        return error_json(too_large_message(self.max_body_bytes), "invalid_request_error", "body_too_large")

    async def _refuse(self, receive: Receive, send: Send, status: int, payload: bytes, *, already: int,
                      more: bool = True, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer now, read and discard what the client is still sending (bounded), then end and close."""
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                   (b"connection", b"close"), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": True})
        discarded, bound = already, DRAIN_FACTOR * self.max_body_bytes
        while more and discarded <= bound:
            try:
                message = await asyncio.wait_for(receive(), self.drain_idle_s)
            except TimeoutError:
                break
            if message["type"] != "http.request":
                break
            discarded += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the server's own receive (which tells a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
