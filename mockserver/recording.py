"""ASGI middleware that times every API request and hands the finished record to journal, metrics, log."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockserver import journal, usage
from mockserver.chaos import ConnectionDropped
from mockserver.errors import StoreUnavailable
from mockserver.ids import request_id
from mockserver.journal import Journal, RequestRecord
from mockserver.runtime import ServerState
from mockserver.usage import UsageLedger

access_log = logging.getLogger("mockserver.access")
log = logging.getLogger("mockserver")

RECORD = "mockserver.record"
CLIENT_CLOSED_REQUEST = 499
REQUEST_ID = "mockserver.request_id"
TRANSPORT = "mockserver.transport"


def record_of(scope: Scope) -> RequestRecord | None:
    return scope.get(RECORD)


def drop_connection(scope: Scope) -> None:
    """Abort the client's connection at once (a TCP reset, no response) and stop this request."""
    transport = scope.get(TRANSPORT)
    if transport is not None:
        transport.abort()
    raise ConnectionDropped


class RecordingMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.shared:  # only another process can have changed what this one runs on
            await self.state.sync()
        if not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        clock = self.state.clock
        record = RequestRecord(request_id(), scope["method"], scope["path"], clock.now())
        scope[REQUEST_ID] = record.request_id
        scope[RECORD] = record
        # uvicorn's receive is a method of the request cycle that owns the transport; chaos faults
        # abort it to drop the connection without a response.
        scope[TRANSPORT] = getattr(getattr(receive, "__self__", None), "transport", None)
        record.retry_count = _retry_count(scope)
        first_token_at: float | None = None
        streaming = False

        async def tracking_send(message: Message) -> None:
            nonlocal first_token_at, streaming
            if message["type"] == "http.response.start":
                record.status = message["status"]
                record.retry_after, streaming = _read_response_headers(message["headers"])
                if streaming:
                    self.state.metrics.open_streams += 1
            elif streaming and first_token_at is None and b"content_block_delta" in message.get("body", b""):
                first_token_at = clock.now()
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ConnectionDropped:
            record.status = record.status or 0  # 0: aborted on purpose before any response
        except ClientDisconnect:
            # The client hung up mid-request (a load generator stopping, a cancelled call): nobody is
            # left to answer, and it is not a server error. 499 is nginx's "client closed request".
            record.status = record.status or CLIENT_CLOSED_REQUEST
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            if streaming:
                self.state.metrics.open_streams -= 1
            self._finish(record, clock.now(), first_token_at, streaming)
            await self._keep(record)

    def _finish(
        self, record: RequestRecord, now: float, first_token_at: float | None, streaming: bool
    ) -> None:
        record.stream = streaming or record.stream
        record.duration_seconds = now - record.started_at
        if record.status != 200:
            return
        if streaming:
            record.ttft_seconds = None if first_token_at is None else first_token_at - record.started_at
        else:
            record.ttft_seconds = record.duration_seconds
        if record.delivered_output_tokens is None and record.usage is not None:
            record.delivered_output_tokens = record.usage.get("output_tokens")
        generating = record.duration_seconds - (record.ttft_seconds or 0.0)
        if streaming and record.delivered_output_tokens and generating > 0:
            record.output_tokens_per_second = record.delivered_output_tokens / generating

    async def _keep(self, record: RequestRecord) -> None:
        settings = self.state.runtime.settings
        self.state.metrics.observe(record)
        if settings.log.access:
            _log_access(record, settings.log.format)
        appends: list[tuple[str, Any, int]] = []
        counters = []
        if (row := Journal.row(record, settings.journal)) is not None:
            appends.append((journal.ENTRIES_KEY, row, settings.journal.max_entries))
            counters.append(journal.APPENDED_KEY)
        if (ledger_row := UsageLedger.row(record)) is not None:
            appends.append((usage.LEDGER_KEY, ledger_row, usage.MAX_ROWS))
        if not appends:
            return
        try:
            await self.state.store.record(appends, counters)
        except StoreUnavailable as exc:
            log.warning("journal entry %s not kept: %s", record.request_id, exc)


def _read_response_headers(headers: list[tuple[bytes, bytes]]) -> tuple[float | None, bool]:
    """(retry-after in seconds, is it an event stream?) in one pass over the ~17 headers of a reply."""
    retry_after: float | None = None
    seen_retry_after = streaming = False
    for key, value in headers:
        if key == b"content-type":
            streaming = streaming or value.startswith(b"text/event-stream")
        elif key == b"retry-after" and not seen_retry_after:
            seen_retry_after = True  # the first one counts, as clients read it
            try:
                retry_after = float(value)
            except ValueError:
                retry_after = None
    return retry_after, streaming


def _retry_count(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"x-stainless-retry-count":
            return int(value) if value.isdigit() else None
    return None


def _log_access(record: RequestRecord, fmt: str) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "model": record.model,
        "speed": record.speed,
        "duration_ms": round((record.duration_seconds or 0) * 1000, 1),
    }
    if fmt == "json":
        access_log.info(orjson.dumps(fields).decode())
    else:
        access_log.info(
            "%s %s %s %s model=%s speed=%s %.1fms",
            fields["request_id"], fields["method"], fields["path"], fields["status"],
            fields["model"], fields["speed"], fields["duration_ms"],
        )  # fmt: skip
