"""The edges of HTTP: reading a bounded body, rendering JSON and error envelopes with a request id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from mockserver.errors import APIError, RequestTooLargeError
from mockserver.ids import request_id


def new_request_id(request: Request) -> str:
    """The id of this request: minted by the recording middleware for API routes, here for the rest."""
    rid = request.scope.get("mockserver.request_id")
    if rid is None:
        rid = request.scope["mockserver.request_id"] = request_id()
    return rid


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
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


def json_response(
    request: Request, body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    all_headers = {"request-id": new_request_id(request), **(headers or {})}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=all_headers
    )


def error_response(request: Request, error: APIError) -> Response:
    rid = new_request_id(request)
    record = request.scope.get("mockserver.record")
    if record is not None:
        record.error_type, record.error_message = error.error_type, error.message
        record.rate_limited_by = getattr(error, "limit", None)
    headers = {"request-id": rid, **error.headers}
    if error.status in (408, 409, 429) or error.status >= 500:
        headers.setdefault("x-should-retry", "true")
    return Response(
        orjson.dumps(error.body(rid)),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )
