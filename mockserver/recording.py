"""ASGI middleware that times every API request and hands the finished record to journal, metrics, log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockserver import journal, usage
from mockserver.chaos import ConnectionDropped
from mockserver.errors import InternalServerError, StoreUnavailable
from mockserver.http_protocol import TRANSPORT_KEY
from mockserver.ids import request_id
from mockserver.journal import Journal, RequestRecord
from mockserver.runtime import ServerState
from mockserver.usage import UsageLedger

access_log = logging.getLogger("mockserver.access")
log = logging.getLogger("mockserver")

RECORD = "mockserver.record"
CLIENT_CLOSED_REQUEST = 499
REQUEST_ID = "mockserver.request_id"
NO_TRANSPORT = (
    "reset faults need mockserver's own HTTP server (mockserver serve, MockServer, the pytest plugin): "
    "this server did not give the app the connection to reset"
)


def record_of(scope: Scope) -> RequestRecord | None:
    return scope.get(RECORD)


def drop_connection(scope: Scope) -> None:
    """Abort the client's connection at once (a TCP reset, no response) and stop this request.

    Only mockserver's own HTTP protocol hands the app the transport to abort. Without it the fault
    must not pass for a server bug (a bare 500) or be skipped: the operator is told in the log, and
    the client in the message of a 500, unless a stream had already started.
    """
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        log.error(NO_TRANSPORT)
        raise InternalServerError(NO_TRANSPORT)
    transport.abort()
    raise ConnectionDropped


async def connection_lost_seen(exc: BaseException) -> None:
    """After a reset, let the server see the connection lost before the app returns: uvicorn logs
    "ASGI callable returned without starting response" as an error for an app that returns without
    answering a client it still thinks is there (the abort's callback runs on the loop's next pass)."""
    if isinstance(exc, ConnectionDropped):
        await asyncio.sleep(0)


class Recorder:
    """Opens the record of an API request and, when it ends, keeps it: metrics, access log, journal
    row and usage ledger. Shared by the direct routes (direct.py) and `RecordingMiddleware`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def open(self, scope: Scope) -> RequestRecord:
        record = RequestRecord(request_id(), scope["method"], scope["path"], self.state.clock.now())
        scope[REQUEST_ID] = record.request_id
        scope[RECORD] = record
        record.retry_count = _retry_count(scope)
        return record

    async def close(self, record: RequestRecord, first_token_at: float | None, streaming: bool) -> None:
        self._finish(record, self.state.clock.now(), first_token_at, streaming)
        runtime = self.state.runtime
        settings = runtime.settings
        self.state.metrics.observe(record, runtime.catalog)
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


class StreamTracker:
    """Wraps `send` for an event stream: counts it as open and notes when the first token went out."""

    def __init__(self, send: Send, recorder: Recorder) -> None:
        self._send = send
        self._clock = recorder.state.clock
        self._metrics = recorder.state.metrics
        self.first_token_at: float | None = None
        self.open = False

    def start(self) -> None:
        self.open = True
        self._metrics.open_streams += 1

    def stop(self) -> None:
        if self.open:
            self.open = False
            self._metrics.open_streams -= 1

    async def send(self, message: Message) -> None:
        if self.first_token_at is None and b"content_block_delta" in message.get("body", b""):
            self.first_token_at = self._clock.now()
        await self._send(message)


def status_after(record: RequestRecord, exc: BaseException) -> int:
    """The journal status of a request its handler left with `exc`, if no response had started."""
    if record.status:
        return record.status
    if isinstance(exc, ConnectionDropped):
        return 0  # aborted on purpose before any response
    if isinstance(exc, ClientDisconnect):
        # The client hung up mid-request (a load generator stopping, a cancelled call): nobody is
        # left to answer, and it is not a server error. 499 is nginx's "client closed request".
        return CLIENT_CLOSED_REQUEST
    return 500


class RecordingMiddleware:
    """Records the API requests that reach Starlette's router (the direct routes record their own)."""

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder
        self.state = recorder.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.needs_sync():  # only another process can have changed what this one runs on
            await self.state.sync()
        if not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        record = self.recorder.open(scope)
        tracker = StreamTracker(send, self.recorder)

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                record.retry_after, streaming = read_response_headers(message["headers"])
                if streaming:
                    tracker.start()
                await send(message)
            elif tracker.open:
                await tracker.send(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except (ConnectionDropped, ClientDisconnect) as exc:
            record.status = status_after(record, exc)
            await connection_lost_seen(exc)
        except BaseException as exc:
            record.status = status_after(record, exc)
            raise
        finally:
            streaming = tracker.open
            tracker.stop()
            await self.recorder.close(record, tracker.first_token_at, streaming)


def read_response_headers(headers: list[tuple[bytes, bytes]]) -> tuple[float | None, bool]:
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
    # Only noted, never checked: anything but a plausible count (a word, a 5,000-digit number, which
    # `int` refuses) is recorded as unknown rather than failing the request it came with.
    for key, value in scope["headers"]:
        if key == b"x-stainless-retry-count":
            return int(value) if value.isdigit() and len(value) <= _MAX_RETRY_COUNT_DIGITS else None
    return None


_MAX_RETRY_COUNT_DIGITS = 9


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
