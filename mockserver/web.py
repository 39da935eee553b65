"""The edges of HTTP: reading a bounded body, rendering JSON and error envelopes with a request id."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Scope

from mockserver.clock import Clock
from mockserver.errors import APIError, RequestTooLargeError
from mockserver.ids import request_id


def new_request_id(request: Request) -> str:
    """The id of this request: minted by the recording middleware for API routes, here for the rest."""
    rid = request.scope.get("mockserver.request_id")
    if rid is None:
        rid = request.scope["mockserver.request_id"] = request_id()
    return rid


def raw_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case), read straight from the ASGI scope: cheaper
    than building Starlette's `Headers` for one lookup."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(request: Request, limit: int) -> bytes:
    declared = raw_header(request.scope, b"content-length")
    if declared is None or not declared.isdigit():
        return await _read_streamed(request, limit)
    if int(declared) > limit:
        raise _too_large(limit)
    # A body of known length is read straight from `receive`: uvicorn hands it over in one message,
    # and `Request.stream`'s async generator cost more than the read itself on the hot path.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # a client that sends more than it declared
            raise _too_large(limit)
        if not message.get("more_body", False):
            body = b"".join((*chunks, chunk)) if chunks else chunk
            # Later readers (request.body(), request.stream()) see the body as if Starlette read it.
            request._body = body
            return body
        chunks.append(chunk)


async def sleep_unless_hung_up(request: Request, clock: Clock, seconds: float) -> None:
    """Sleep `seconds` on `clock` before answering, or raise `ClientDisconnect` as soon as the client
    hangs up (its body already read): a reply nobody waits for would hold its task, a test's
    journal row and the server's shutdown until the sleep ended."""
    if seconds <= 0:
        return
    # One watcher task that cancels this one, rather than racing two tasks in asyncio.wait: this runs
    # for every paced reply, and the race cost ~35 us more per request.
    sleeper = asyncio.current_task()
    assert sleeper is not None
    sleeping, hung_up = True, False

    def on_hang_up(watcher: asyncio.Future[None]) -> None:
        nonlocal hung_up
        if sleeping and not watcher.cancelled() and watcher.exception() is None:
            hung_up = True
            sleeper.cancel()

    watcher = asyncio.ensure_future(_hang_up(request))
    watcher.add_done_callback(on_hang_up)
    try:
        await clock.sleep(seconds)
    except asyncio.CancelledError:
        if not hung_up:
            raise
        sleeper.uncancel()  # this cancel was ours: the task goes on to record the request as 499
        raise ClientDisconnect() from None
    finally:
        sleeping = False  # a hang-up noticed from now on is no longer this sleep's
        watcher.cancel()


async def _hang_up(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body", False):
            # The body was read whole already; a server that answers again with an empty last
            # chunk (none of uvicorn's protocols does) can tell us nothing more.
            await asyncio.Event().wait()


async def _read_streamed(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"Request exceeds the maximum allowed number of bytes ({limit:,}).")


class JSONBytes(Response):
    """A JSON response whose body and raw header list are built by the caller: Starlette's
    `Response.__init__` re-scans the headers for content-length and content-type on every call."""

    media_type = "application/json"

    def __init__(self, content: bytes, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = content
        self.raw_headers = raw_headers


def json_response(
    request: Request,
    body: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    raw_headers: Sequence[tuple[bytes, bytes]] = (),
) -> Response:
    """`body` as JSON with request-id, then `headers` and `raw_headers` (lower-case names; none of
    request-id, content-type, content-length), then content-length and content-type: Starlette's order."""
    content = orjson.dumps(body)
    raw = [(b"request-id", new_request_id(request).encode())]
    if headers:
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    raw += raw_headers
    raw.append((b"content-length", str(len(content)).encode()))
    raw.append(_JSON_CONTENT_TYPE)
    return JSONBytes(content, status, raw)


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def error_response(request: Request, error: APIError) -> Response:
    rid = new_request_id(request)
    record = request.scope.get("mockserver.record")
    if record is not None:
        record.error_type, record.error_message = error.error_type, error.message
        record.rate_limited_by = getattr(error, "limit", None)
    headers = dict(error.headers)
    if error.status in (408, 409, 429) or error.status >= 500:
        headers.setdefault("x-should-retry", "true")
    return json_response(request, error.body(rid), status=error.status, headers=headers)
