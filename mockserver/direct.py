"""The hottest routes, served before Starlette sees the request.

Every API call through Starlette pays for its app and error middleware, the router's scan,
`request_response`, and a wrapper around `send` per layer. For an exact (method, path) match
`MockApp` (app.py) hands the request here instead: it is recorded, the endpoint is called, its
exceptions are mapped with the app's own handlers exactly as Starlette would map them, and the
response goes straight to the server's `send` (wrapped only for an event stream, to time its first
token). Everything else goes through Starlette unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from mockserver.chaos import ConnectionDropped
from mockserver.recording import (
    Recorder,
    StreamTracker,
    connection_lost_seen,
    read_response_headers,
    status_after,
)

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    def __init__(
        self,
        routes: Mapping[tuple[str, str], Endpoint],
        handlers: Mapping[type, Handler],
        unexpected: Handler,
        recorder: Recorder,
    ) -> None:
        self.routes = dict(routes)
        self.handlers = dict(handlers)
        self.unexpected = unexpected
        self.recorder = recorder
        self.state = recorder.state

    async def serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state.needs_sync():  # only another process can have changed what this one runs on
            await self.state.sync()
        record = self.recorder.open(scope)
        request = Request(scope, receive, send)
        tracker: StreamTracker | None = None
        started = False
        try:
            try:
                response = await endpoint(request)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                response = await handler(request, exc)  # the app's rendering: an APIError, ...
                # Reused exception instances would accumulate tracebacks across requests.
                exc.__traceback__ = None
            record.status = response.status_code
            if _is_event_stream(response):
                tracker = StreamTracker(send, self.recorder)
                tracker.start()
                send = tracker.send
            elif record.status != 200:
                record.retry_after, _ = read_response_headers(response.raw_headers)
            started = True
            await response(scope, receive, send)
        except (ConnectionDropped, ClientDisconnect) as exc:
            record.status = status_after(record, exc)
            await connection_lost_seen(exc)
        except Exception as exc:
            # As Starlette's ServerErrorMiddleware: the app's handler logs it and answers 500 if no
            # response has started; then it goes on to the server's log.
            record.status = status_after(record, exc)
            reply = await self.unexpected(request, exc)
            if not started:
                await reply(scope, receive, send)
            raise
        except BaseException as exc:
            record.status = status_after(record, exc)
            raise
        finally:
            if tracker is None:
                await self.recorder.close(record, None, False)
            else:
                tracker.stop()
                await self.recorder.close(record, tracker.first_token_at, True)

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None


def _is_event_stream(response: Response) -> bool:
    return isinstance(response, StreamingResponse) and (response.media_type or "").startswith(
        "text/event-stream"
    )
