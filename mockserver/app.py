"""`create_app`: wiring only. Routes, error rendering and shared state; no logic, nothing at import."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from mockserver.clock import Clock
from mockserver.direct import DirectRoutes, Handler
from mockserver.errors import (
    APIError,
    ConfigError,
    InternalServerError,
    MethodNotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
    StoreUnavailable,
)
from mockserver.recording import Recorder, RecordingMiddleware
from mockserver.redis_client import begin_request, end_request
from mockserver.routes import admin, batches, messages, models
from mockserver.runtime import Runtime, ServerState
from mockserver.settings import Settings
from mockserver.web import error_response

log = logging.getLogger("mockserver")


class MockApp(Starlette):
    """Starlette, with the hottest routes served by `DirectRoutes` before its middleware stack."""

    direct: DirectRoutes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_admin_change(scope):
            # An admin change (a reset deleting page by page above all) must not stop halfway, half
            # done, when a request's store deadline runs out: each of its store calls keeps its own.
            await super().__call__(scope, receive, send)
            return
        waited = begin_request()  # one store deadline for all the request's store calls
        try:
            endpoint = self.direct.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                await self.direct.serve(endpoint, scope, receive, send)
                return
            await super().__call__(scope, receive, send)
        finally:
            end_request(waited)


def _is_admin_change(scope: Scope) -> bool:
    return scope["method"] != "GET" and scope["path"].startswith("/_admin/")


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> MockApp:
    state = ServerState(Runtime.from_settings(settings or Settings()), clock=clock)
    routes = [
        Route("/v1/messages", messages.create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        *batches.routes(),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/_admin/health", admin.health, methods=["GET"]),
        Route("/_admin/settings", admin.get_settings, methods=["GET"]),
        Route("/_admin/settings", admin.patch_settings, methods=["PATCH"]),
        Route("/_admin/reset", admin.reset, methods=["POST"]),
        Route("/_admin/requests", admin.list_requests, methods=["GET"]),
        Route("/_admin/requests", admin.clear_requests, methods=["DELETE"]),
        Route("/_admin/usage", admin.usage, methods=["GET"]),
        Route("/_admin/faults", admin.list_faults, methods=["GET"]),
        Route("/_admin/faults", admin.create_fault, methods=["POST"]),
        Route("/_admin/faults/{name}", admin.delete_fault, methods=["DELETE"]),
        Route("/_admin/replies", admin.create_replies, methods=["POST"]),
        Route("/_admin/replies", admin.list_replies, methods=["GET"]),
        Route("/_admin/replies", admin.clear_replies, methods=["DELETE"]),
        Route("/metrics", admin.metrics, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await state.close()

    handled: dict[type, Handler] = {
        APIError: _api_error,
        HTTPException: _http_error,
        StoreUnavailable: _store_unavailable,
    }
    recorder = Recorder(state)
    app = MockApp(
        routes=routes,
        middleware=[Middleware(RecordingMiddleware, recorder=recorder)],
        exception_handlers={**handled, Exception: _unexpected},
        lifespan=lifespan,
    )
    # The hot path skips Starlette; an endpoint listed here must also stay in `routes` (405s, docs).
    direct = {("POST", "/v1/messages"): messages.create_message}
    app.direct = DirectRoutes(direct, handled, _unexpected, recorder)
    # `/v1/messages/` is a 404 envelope, as from the API, not a 307 to the path without the slash.
    app.router.redirect_slashes = False
    app.state.mock = state
    return app


WORKER_SETTINGS_ENV = "MOCKSERVER_WORKER_SETTINGS"


def app_from_environment() -> MockApp:
    """The app of one `--workers` process: its parent passes the final settings as JSON.

    The parent built the same app with `worker_app` before it started any worker, so this fails only
    if something changed since (a replies file removed). Then the worker says why and exits with
    uvicorn's STARTUP_FAILURE status, which stops the supervisor instead of restarting it for ever.
    """
    try:
        app = worker_app(os.environ.get(WORKER_SETTINGS_ENV) or Settings().model_dump_json())
    except ConfigError as exc:
        log.error("mockserver: error: worker process %d cannot start: %s", os.getpid(), exc)
        sys.exit(STARTUP_FAILURE)
    freeze_startup_heap()
    return app


def worker_app(payload: str) -> MockApp:
    """The app a worker builds from its parent's settings JSON; ConfigError if they do not come through
    (a float `inf` is written as JSON null, for one)."""
    try:
        settings = Settings.model_validate_json(payload)
    except ValidationError as exc:
        raise ConfigError(f"the settings cannot be passed to worker processes: {exc}") from None
    return create_app(settings)


def freeze_startup_heap() -> None:
    """Exempt everything built at startup (modules, schemas, the app) from garbage collection.

    Only for a process that exists to serve: each full collection otherwise re-walks those
    hundreds of thousands of long-lived objects, about a tenth of a request's CPU under load.
    """
    gc.collect()
    gc.freeze()


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(request, exc)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # An unreachable shared store is an outage the client should retry, wherever it surfaced.
    return error_response(request, ServiceUnavailableError(f"service unavailable: {exc}"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: APIError = MethodNotAllowedError(
            f"Method {request.method} is not allowed for {request.url.path}", headers=exc.headers
        )
    elif exc.status_code == 404:
        error = NotFoundError(f"Not found: {request.method} {request.url.path}")
    else:
        error = APIError(exc.detail, status=exc.status_code)
    return error_response(request, error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug in mockserver must still look like the API (a retryable 500), not like a traceback;
    # the exception is kept so an embedding test (the pytest plugin) can fail with it.
    log.exception("unexpected error while serving %s %s", request.method, request.url.path)
    request.app.state.mock.note_server_error(exc)
    return error_response(request, InternalServerError("Internal server error"))
