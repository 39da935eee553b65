"""POST /v1/messages and POST /v1/messages/count_tokens: parse, route, plan, deliver."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mockserver.admission import Ticket, admit, current_headers, settle
from mockserver.cache import CacheOutcome, PromptCache
from mockserver.catalog import model_class
from mockserver.chaos import (
    FAULT_HEADER,
    RETRY_COUNT_HEADER,
    Fired,
    header_fault,
    http_error,
    http_error_status,
)
from mockserver.errors import InvalidRequestError
from mockserver.fallbacks import check_fallbacks
from mockserver.fastmode import Route, route
from mockserver.faults import STREAM_KINDS, Fault, Target, latency
from mockserver.ids import message_id
from mockserver.journal import RequestRecord, api_key_id
from mockserver.organizations import Organization
from mockserver.pricing import cost_usd
from mockserver.recording import drop_connection, record_of
from mockserver.replies import Planner, Reply
from mockserver.runtime import Runtime, ServerState
from mockserver.streaming import generation_seconds, stream_reply
from mockserver.tokens import count_input
from mockserver.validation import (
    MessagesRequest,
    check_model_limits,
    check_tool_choice,
    parse_count_tokens_request,
    parse_messages_request,
    read_caller,
)
from mockserver.web import json_response, new_request_id, raw_header, read_body, sleep_unless_hung_up

SSE_HEADERS = {"cache-control": "no-cache"}
# What a request that neither reads nor writes the cache gets (most); read only, never changed.
_NO_CACHE = CacheOutcome()
_FAULT_HEADER = FAULT_HEADER.encode()
_RETRY_COUNT_HEADER = RETRY_COUNT_HEADER.encode()


async def create_message(request: Request) -> Response:
    """The path of DESIGN.md §1: parse, route, faults, cache, admission, plan, deliver."""
    state: ServerState = request.app.state.mock
    runtime = state.runtime
    record = record_of(request.scope) or RequestRecord("", "", "", 0.0)
    caller = read_caller(request.scope["headers"], known_betas=runtime.known_betas, api_keys=runtime.api_keys)
    record.api_key_id = api_key_id(caller.api_key)
    parsed = parse_messages_request(await read_body(request, runtime.settings.max_body_bytes), caller)
    _note_request(record, parsed, runtime.settings.journal.record_bodies)
    body = parsed.body
    org = runtime.organization(caller.api_key)
    record.organization = org.name
    chosen = route(runtime.catalog, body.model, body.speed, caller.betas, fast_allowed=org.fast_mode)
    record.model, record.speed = chosen.model.id, chosen.speed
    raw = parsed.raw
    input_tokens = count_input(messages=raw["messages"], system=raw.get("system"), tools=raw.get("tools"))
    check_model_limits(chosen.model, body.max_tokens, input_tokens, body.model)
    check_tool_choice(parsed)
    if body.fallbacks is not None:
        check_fallbacks(body, caller.betas, chosen.model, runtime.catalog)
    if state.script.may_apply(state):  # a test scripted replies (or this worker has not looked)
        respond = functools.partial(_respond, request, state, record, parsed, org, chosen, input_tokens)
        limits = functools.partial(current_headers, state, org, chosen.speed, model_class(chosen.model))
        return await state.script.answer(state, runtime, raw, chosen, record, respond, limits)
    return await _respond(request, state, record, parsed, org, chosen, input_tokens, runtime)


async def _respond(
    request: Request,
    state: ServerState,
    record: RequestRecord,
    parsed: MessagesRequest,
    org: Organization,
    chosen: Route,
    input_tokens: int,
    runtime: Runtime,
) -> Response:
    """Faults, cache, plan, admission, deliver: the rest of the path, with `runtime`'s planner."""
    body, raw = parsed.body, parsed.raw
    settings = runtime.settings
    header = raw_header(request.scope, _FAULT_HEADER) if settings.chaos.header_faults else None
    fired = None
    if header is not None or settings.faults or state.created_faults:  # most requests have none
        fired = await _choose_fault(state, request, header, chosen, org.name, bool(body.stream))
    if fired is not None:
        record.fault = fired.fault.name
        chosen = await _apply_http_fault(state, request, fired, chosen, org)
        record.speed = chosen.speed
    mid = message_id()
    cached = _NO_CACHE
    if settings.cache.enabled and PromptCache.applies(raw):
        cached = await _look_up_cache(state, parsed, org.name, chosen.model.id, chosen.speed)
    created = cached.created_tokens
    uncached = input_tokens - cached.read_tokens - created
    # Cache reads do not count towards input-token limits; cache writes do (reference §10.1).
    limited_input = uncached + created
    reply = _plan(runtime.planner, parsed, chosen, uncached, cached)
    if parsed.body.diagnostics is not None:
        diagnostics = await _diagnose(state, parsed, cached)
        if diagnostics is not None:
            reply = replace(reply, diagnostics=diagnostics)
    # A reply that is sent whole and at once is charged its real output on admission; a stream or a
    # paced reply reserves max_tokens while it is being generated and settles at the end.
    instant = not body.stream and not runtime.settings.timing.pace_non_streaming
    ticket = await admit(
        state,
        org,
        chosen.speed,
        model_class(chosen.model),
        input_tokens=limited_input,
        max_tokens=body.max_tokens,
        output_tokens=reply.usage.output_tokens if instant else None,
    )
    if cached.writes:
        await state.cache.commit(cached, now=state.clock.now(), message_id=mid)
    record.usage = reply.usage.to_json()
    record.cost_usd = cost_usd(record.usage, chosen.model, runtime.settings.pricing)
    if body.stream:
        stream_fault = fired.fault if fired is not None and fired.fault.kind in STREAM_KINDS else None
        return _streamed(request, state, record, reply, mid, chosen, ticket, stream_fault)
    if not instant:
        try:
            await sleep_unless_hung_up(request, state.clock, generation_seconds(reply, runtime, chosen.model))
        finally:
            await settle(state, ticket, reply.usage.output_tokens)
    return json_response(request, reply.message(mid, record.usage), raw_headers=ticket.raw_headers)


def _note_request(record: RequestRecord, parsed: MessagesRequest, keep_body: bool) -> None:
    body = parsed.body
    record.model, record.speed, record.stream = body.model, body.speed or "standard", bool(body.stream)
    record.requested_speed = body.speed
    record.betas, record.max_tokens = sorted(parsed.caller.betas), body.max_tokens
    if keep_body:
        record.body = parsed.raw


def _plan(
    planner: Planner, parsed: MessagesRequest, chosen: Route, uncached: int, cached: CacheOutcome
) -> Reply:
    reply = planner.plan(parsed.raw, model=chosen.model.id, speed=chosen.speed, input_tokens=uncached)
    if cached.read_tokens or cached.created_tokens:
        # Skipped on a miss, the common case: the planner's usage already has zero cache fields.
        reply = reply.with_usage(
            cache_read_input_tokens=cached.read_tokens,
            cache_creation_input_tokens=cached.created_tokens,
            ephemeral_5m_input_tokens=cached.created_5m,
            ephemeral_1h_input_tokens=cached.created_1h,
        )
    return reply


def _streamed(
    request: Request,
    state: ServerState,
    record: RequestRecord,
    reply: Reply,
    mid: str,
    chosen: Route,
    ticket: Ticket,
    fault: Fault | None,
) -> StreamingResponse:
    pricing = state.runtime.settings.pricing

    async def finished(tokens_sent: int) -> None:
        # The tokens the client really got: all of them, or fewer after a disconnect or a fault.
        record.delivered_output_tokens = tokens_sent
        if tokens_sent != reply.usage.output_tokens and record.usage is not None:  # billed as delivered
            record.cost_usd = cost_usd({**record.usage, "output_tokens": tokens_sent}, chosen.model, pricing)
        await settle(state, ticket, tokens_sent)

    stream = stream_reply(
        reply,
        mid,
        state.runtime,
        state.clock,
        chosen.model,
        on_finish=finished,
        fault=fault,
        drop_connection=lambda: drop_connection(request.scope),
    )
    headers = {"request-id": new_request_id(request), **ticket.headers, **SSE_HEADERS}
    return StreamingResponse(stream, media_type="text/event-stream; charset=utf-8", headers=headers)


async def _choose_fault(
    state: ServerState, request: Request, header: str | None, chosen: Route, org: str, stream: bool
) -> Fired | None:
    settings = state.runtime.settings
    faults = [*settings.faults, *state.created_faults]
    target = Target(
        path=request.url.path, model=chosen.model.id, speed=chosen.speed, organization=org, stream=stream
    )
    now = state.clock.now()
    if header is not None:
        retry_count = raw_header(request.scope, _RETRY_COUNT_HEADER)
        return header_fault(header, faults, retry_count, target, seed=settings.seed, now=now)
    return await state.faults.choose(target, faults, seed=settings.seed, now=now)


async def _apply_http_fault(
    state: ServerState, request: Request, fired: Fired, chosen: Route, org: Organization
) -> Route:
    """Act out a fault that strikes before the reply starts; stream faults are left to the stream."""
    fault = fired.fault
    if fault.kind in ("http_error", "fast_outage"):
        # A 429 carries the caller's rate-limit headers, as a real one does: a read, paid only here.
        limits = None
        if http_error_status(fault) == 429:
            limits = await current_headers(state, org, chosen.speed, model_class(chosen.model))
        raise http_error(fault, state.clock.now(), limits)
    if fault.kind == "latency":
        delay = latency(fault, state.runtime.settings.seed, fired.seen)
        await sleep_unless_hung_up(request, state.clock, delay)
    elif fault.kind == "reset":
        drop_connection(request.scope)
    elif fault.kind == "degrade_speed" and chosen.speed == "fast":
        if not state.runtime.settings.chaos.allow_degraded_speed:
            raise InvalidRequestError("degrade_speed faults need chaos.allow_degraded_speed = true")
        return replace(chosen, speed="standard")
    return chosen


async def _look_up_cache(
    state: ServerState, parsed: MessagesRequest, org: str, model: str, speed: str
) -> CacheOutcome:
    settings = state.runtime.settings.cache
    return await state.cache.lookup(
        parsed.raw, org=org, model=model, speed=speed, now=state.clock.now(), min_tokens=settings.min_tokens
    )


async def _diagnose(
    state: ServerState, parsed: MessagesRequest, cached: CacheOutcome
) -> dict[str, Any] | None:
    asked = parsed.body.diagnostics
    if asked is None or asked.previous_message_id is None or cached.fingerprint is None:
        return None
    return await state.cache.diagnose(asked.previous_message_id, cached.fingerprint)


async def count_tokens(request: Request) -> Response:
    state: ServerState = request.app.state.mock
    runtime = state.runtime
    caller = read_caller(request.scope["headers"], known_betas=runtime.known_betas, api_keys=runtime.api_keys)
    body, raw = parse_count_tokens_request(await read_body(request, runtime.settings.max_body_bytes))
    org = runtime.organization(caller.api_key)
    route(runtime.catalog, body.model, body.speed, caller.betas, fast_allowed=org.fast_mode)
    tokens = count_input(messages=raw["messages"], system=raw.get("system"), tools=raw.get("tools"))
    return json_response(request, {"input_tokens": tokens})
