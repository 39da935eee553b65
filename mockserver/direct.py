"""ASGI middleware that serves the hottest routes without Starlette's router and exception layers.

Every API call pays for the router's scan, `request_response` and two `wrap_app_handling_exceptions`
wrappers around `send`. For an exact (method, path) match this calls the endpoint directly and maps
its exceptions with the app's own handlers, exactly as `ExceptionMiddleware` would; anything else
(and every unhandled exception) goes on to the wrapped app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    def __init__(
        self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint], handlers: Mapping[type, Handler]
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.handlers = dict(handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            await (await handler(request, exc))(scope, receive, send)
            # Reused exception instances would accumulate tracebacks across requests.
            exc.__traceback__ = None
            return
        # Outside the try: by the time a response raises it has started (both JSON and event-stream
        # responses send their start first), so there is nothing left to map to an error reply.
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None
