"""The control plane under `/_admin/`: health, live settings, reset, the request journal; and /metrics."""

from __future__ import annotations

import hmac
import math
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mockserver import scripted
from mockserver.chaos import parse_fault
from mockserver.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
)
from mockserver.journal import FILTERS
from mockserver.metrics import CONTENT_TYPE
from mockserver.paging import query_int
from mockserver.runtime import ServerState
from mockserver.validation import parse_json
from mockserver.web import json_response, read_body

# Settings that pick sockets or stores: they take effect only at startup.
BOOT_ONLY = ("host", "port", "storage", "key_prefix")
ADMIN_TOKEN_HEADER = "x-mockserver-admin-token"
# Above any journal's size: `limit` beyond it is a mistake, not "all of them".
MAX_JOURNAL_LIMIT = 1_000_000_000


def _state(request: Request) -> ServerState:
    return request.app.state.mock


def authorize(request: Request) -> ServerState:
    state = _state(request)
    admin = state.runtime.settings.admin
    if not admin.enabled:
        raise NotFoundError(f"Not found: {request.method} {request.url.path}")
    if admin.token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = request.headers.get(ADMIN_TOKEN_HEADER) or (given if scheme.lower() == "bearer" else "")
        if not hmac.compare_digest(given.encode(), admin.token.encode()):
            raise AuthenticationError("the admin API needs its token: Authorization: Bearer <admin.token>")
    return state


async def health(request: Request) -> Response:
    # Always on, even with the admin API disabled: container healthchecks need it, it reveals nothing.
    state = _state(request)
    await state.buckets.ping()  # an unreachable store raises StoreUnavailable: the app answers 503
    await state.store.ping()
    # `worker` (the process id) tells the workers of one server apart: /metrics and the journal's
    # per-worker views, a supervisor's logs, a test that pins a connection to one of them.
    body = {"status": "ok", "storage": _redacted_storage(state), "worker": os.getpid()}
    return json_response(request, body)


async def get_settings(request: Request) -> Response:
    state = authorize(request)
    return json_response(request, public_settings(state))


async def patch_settings(request: Request) -> Response:
    state = authorize(request)
    patch = parse_json(await read_body(request, state.runtime.settings.max_body_bytes))
    fixed = [key for key in BOOT_ONLY if key in patch]
    if fixed:
        raise InvalidRequestError(f"{fixed[0]}: can only be set at startup (config file, environment or CLI)")
    try:
        await state.patch_settings(patch)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    return json_response(request, public_settings(state))


async def reset(request: Request) -> Response:
    state = authorize(request)
    await state.reset()
    return json_response(request, {"status": "reset"})


async def list_requests(request: Request) -> Response:
    state = authorize(request)
    filters = {k: v for k, v in request.query_params.items() if k in FILTERS}
    status = filters.get("status")
    if status is not None and not _is_status_filter(status):
        raise InvalidRequestError("status: expected a status code (429) or a class (4xx)")
    if filters.get("stream", "true").lower() not in ("true", "false"):
        raise InvalidRequestError("stream: expected true or false")
    unknown = set(request.query_params) - set(FILTERS) - {"limit"}
    if unknown:
        raise InvalidRequestError(f"{sorted(unknown)[0]}: unknown filter; use {', '.join(FILTERS)}")
    rows = await state.journal.entries(filters)
    limit = request.query_params.get("limit")
    if limit is not None:
        last = query_int(limit, "limit", 0, MAX_JOURNAL_LIMIT)
        rows = rows[-last:] if last else []
    dropped = await state.journal.dropped()
    return json_response(request, {"data": rows, "count": len(rows), "dropped": dropped})


def _is_status_filter(status: str) -> bool:
    # A status as journalled (0 for a reset, 200, 499...) or a class; ASCII digits only.
    if not status.isascii():
        return False
    return (status.isdigit() and len(status) <= 3) or (
        len(status) == 3 and status[0].isdigit() and status[1:] == "xx"
    )


async def clear_requests(request: Request) -> Response:
    state = authorize(request)
    count = len(await state.journal.entries())
    await state.journal.clear()
    return json_response(request, {"deleted": count})


async def list_faults(request: Request) -> Response:
    state = authorize(request)
    configured = [{**f.model_dump(), "source": "settings"} for f in state.runtime.settings.faults]
    created = [{**f.model_dump(), "source": "admin"} for f in state.created_faults]
    return json_response(request, {"data": configured + created})


async def create_fault(request: Request) -> Response:
    state = authorize(request)
    fault = parse_fault(parse_json(await read_body(request, state.runtime.settings.max_body_bytes)))
    if fault.kind == "degrade_speed" and not state.runtime.settings.chaos.allow_degraded_speed:
        raise InvalidRequestError("kind: degrade_speed faults need chaos.allow_degraded_speed = true")
    await state.add_fault(fault)
    return json_response(request, {**fault.model_dump(), "source": "admin"}, status=201)


async def delete_fault(request: Request) -> Response:
    state = authorize(request)
    name = request.path_params["name"]
    if any(f.name == name for f in state.runtime.settings.faults):
        raise InvalidRequestError(
            f"fault {name!r} comes from the settings; change it with PATCH /_admin/settings"
        )
    if not await state.delete_fault(name):
        raise NotFoundError(f"no fault named {name!r}")
    return json_response(request, {"name": name, "deleted": True})


async def usage(request: Request) -> Response:
    """Tokens and cost grouped by organisation, model and speed; `since`/`until` are epoch seconds."""
    state = authorize(request)
    bounds = {}
    for name in ("since", "until"):
        raw = request.query_params.get(name)
        if raw is not None:
            try:
                bound = float(raw)
            except ValueError:
                bound = math.nan
            if not math.isfinite(bound):  # nan would filter nothing and inf everything
                raise InvalidRequestError(f"{name}: Input should be epoch seconds (a finite number)")
            bounds[name] = bound
    rows = await state.usage.report(**bounds)
    total = round(sum(row["cost_usd"] for row in rows), 6)
    unknown = sum(row["unknown_cost_requests"] for row in rows)  # their cost is not in the total
    return json_response(request, {"data": rows, "total_cost_usd": total, "unknown_cost_requests": unknown})


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


def public_settings(state: ServerState) -> dict[str, Any]:
    data = state.runtime.settings.model_dump(mode="json")
    if data["admin"]["token"] is not None:
        data["admin"]["token"] = "***"
    data["storage"] = _redacted_storage(state)
    return data


def _redacted_storage(state: ServerState) -> str:
    from mockserver.limits.store import redact

    return redact(state.runtime.settings.storage)


async def create_replies(request: Request) -> Response:
    """Queue scripted responses: one entry, or `{"replies": [...]}` answered in that order."""
    state = authorize(request)
    entries = scripted.parse_entries(
        parse_json(await read_body(request, state.runtime.settings.max_body_bytes)), state.runtime.catalog
    )
    return json_response(request, {"data": await scripted.add(state, entries)}, status=201)


async def list_replies(request: Request) -> Response:
    state = authorize(request)
    return json_response(request, {"data": await scripted.listed(state)})


async def clear_replies(request: Request) -> Response:
    state = authorize(request)
    return json_response(request, {"deleted": await scripted.clear(state)})
