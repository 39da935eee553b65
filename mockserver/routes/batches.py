"""The Message Batches endpoints (/v1/messages/batches…): read the caller, call `mockserver.batches`.

Batches belong to the caller's organisation: another organisation's batch id is a 404. Batches are
not charged to the rate limits (the real API gives them limits of their own, not emulated here).
Beta clients hit the same paths (SDK0 adds `?beta=true`, which needs no handling: it is ignored).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mockserver import batches
from mockserver.journal import api_key_id
from mockserver.paging import page
from mockserver.recording import record_of
from mockserver.runtime import Runtime, ServerState
from mockserver.validation import Caller, read_caller
from mockserver.web import json_response, new_request_id, read_body

BASE = "/v1/messages/batches"
CHUNK_BYTES = 64 * 1024  # lines are sent in chunks: a 100,000-line file is not 100,000 writes
Handler = Callable[[Request], Awaitable[Response]]


def routes() -> list[Route]:
    return [
        Route(BASE, create_batch, methods=["POST"]),
        Route(BASE, list_batches, methods=["GET"]),
        Route(BASE + "/{batch_id}", get_batch, methods=["GET"]),
        Route(BASE + "/{batch_id}", delete_batch, methods=["DELETE"]),
        Route(BASE + "/{batch_id}/cancel", cancel_batch, methods=["POST"]),
        Route(BASE + "/{batch_id}/results", batch_results, methods=["GET"]),
    ]


def _caller(request: Request) -> tuple[ServerState, Runtime, Caller, str]:
    state: ServerState = request.app.state.mock
    runtime = state.runtime  # read once: a settings change never shows a request half old, half new
    caller = read_caller(request.scope["headers"], known_betas=runtime.known_betas, api_keys=runtime.api_keys)
    org = runtime.organization(caller.api_key).name
    record = record_of(request.scope)
    if record is not None:
        record.api_key_id, record.organization = api_key_id(caller.api_key), org
        record.betas = sorted(caller.betas)
    return state, runtime, caller, org


def _results_url(request: Request, batch_id: str) -> str:
    # Absolute and pointing at this server as the client reached it: the SDK follows it as given.
    return f"{str(request.base_url).rstrip('/')}{BASE}/{batch_id}/results"


def _render(request: Request, batch: batches.Batch, now: float) -> dict[str, object]:
    return batches.render(batch, now, _results_url(request, batch.id))


async def create_batch(request: Request) -> Response:
    state, runtime, caller, org = _caller(request)
    config = runtime.settings.batches
    payload = await read_body(request, config.max_body_bytes)
    new = batches.parse_batch(payload, caller, runtime.catalog, max_requests=config.max_requests)
    now = state.clock.now()
    batch = await batches.create(state.store, org, new, now=now, settings=runtime.settings)
    return json_response(request, _render(request, batch, now))


async def get_batch(request: Request) -> Response:
    state, _, _, org = _caller(request)
    batch = await batches.load(state.store, org, request.path_params["batch_id"])
    return json_response(request, _render(request, batch, state.clock.now()))


async def list_batches(request: Request) -> Response:
    state, _, _, org = _caller(request)
    now = state.clock.now()
    rows = [_render(request, batch, now) for batch in await batches.list_newest_first(state.store, org)]
    return json_response(request, page(rows, request.query_params))


async def cancel_batch(request: Request) -> Response:
    state, runtime, _, org = _caller(request)
    now = state.clock.now()
    batch_id = request.path_params["batch_id"]
    batch = await batches.cancel(state.store, org, batch_id, now=now, settings=runtime.settings)
    return json_response(request, _render(request, batch, now))


async def delete_batch(request: Request) -> Response:
    state, _, _, org = _caller(request)
    batch_id = request.path_params["batch_id"]
    await batches.delete(state.store, org, batch_id, now=state.clock.now())
    return json_response(request, {"id": batch_id, "type": "message_batch_deleted"})


async def batch_results(request: Request) -> Response:
    state, runtime, _, org = _caller(request)
    batch_id = request.path_params["batch_id"]
    # Everything that can fail is read before the first byte goes out; the lines are planned as sent.
    batch, params = await batches.results_source(state.store, org, batch_id, now=state.clock.now())
    lines = batches.result_lines(batch, params, runtime.catalog, runtime.planner)
    headers = {"request-id": new_request_id(request)}
    # A plain iterator: Starlette runs it in a worker thread, so planning never blocks the event loop.
    return StreamingResponse(_chunked(lines), media_type="application/x-jsonl", headers=headers)


def _chunked(lines: Iterable[bytes]) -> Iterator[bytes]:
    buffer = bytearray()
    for line in lines:
        buffer += line
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)
