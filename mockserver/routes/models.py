"""GET /v1/models (paged, newest first) and GET /v1/models/{model_id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mockserver.catalog import model_info
from mockserver.errors import InvalidRequestError, NotFoundError
from mockserver.paging import page
from mockserver.runtime import ServerState
from mockserver.validation import read_caller
from mockserver.web import json_response

LIFECYCLES = ("active", "deprecated", "retired")


async def list_models(request: Request) -> Response:
    state: ServerState = request.app.state.mock
    read_caller(request.scope["headers"], api_keys=state.runtime.api_keys)
    lifecycles = request.query_params.getlist("lifecycle[]") or request.query_params.getlist("lifecycle")
    for value in lifecycles:
        if value not in LIFECYCLES:
            raise InvalidRequestError(f"lifecycle: Input should be {', '.join(map(repr, LIFECYCLES))}")
    if len(lifecycles) > 3:
        raise InvalidRequestError("lifecycle: List should have at most 3 items")
    wanted = set(lifecycles or ("active", "deprecated"))
    rows = [model_info(m) for m in state.runtime.catalog.newest_first() if m.lifecycle in wanted]
    return json_response(request, page(rows, request.query_params))


async def get_model(request: Request) -> Response:
    state: ServerState = request.app.state.mock
    read_caller(request.scope["headers"], api_keys=state.runtime.api_keys)
    name = request.path_params["model_id"]
    entry = state.runtime.catalog.resolve(name)
    if entry is None:
        raise NotFoundError(f"model: {name}")
    return json_response(request, model_info(entry))
