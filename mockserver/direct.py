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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            response = await endpoint(request)
            await response(scope, receive, sender)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            if started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            await (await handler(request, exc))(scope, receive, sender)
            # Reused exception instances would accumulate tracebacks across requests.
            exc.__traceback__ = None

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None
