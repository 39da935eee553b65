"""Faults at run time: where they are kept, which one fires for a request, and what it does on the wire.

Faults come from three places: the settings (`faults = [...]`, part of the boot state), the admin API
(`/_admin/faults`, kept in the shared store so every worker sees them), and a single request's
`x-mockserver-fault` header (a configured fault's name, or a fault as JSON, for targeted tests).

A header fault belongs to one logical request, which an SDK may send several times: its `count`
counts that request's attempts by the SDK's `x-stainless-retry-count` header, so `count: 1` fails
the first attempt and lets the retry through. `every` and `probability` describe a stream of
requests and have no meaning for one; they stay with the settings and the admin API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mockserver.errors import APIError, InvalidRequestError, RateLimitError, api_error_for_status
from mockserver.faults import Fault, Target, fires, matches
from mockserver.state import StateStore
from mockserver.validation import describe, parse_json

FAULT_HEADER = "x-mockserver-fault"
RETRY_COUNT_HEADER = "x-stainless-retry-count"
MAX_OUTAGE_RETRY_AFTER = 60.0
_CREATED = "faults:by-name"  # a table (the list under "faults:created" of earlier versions is ignored)
_ORDER = "faults:order"
_DEFAULT_MESSAGES = {
    429: "Rate limited (injected fault)",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
    529: "Overloaded",
}


class ConnectionDropped(Exception):
    """Raised after the connection was aborted on purpose; nothing more may be sent."""


@dataclass(frozen=True, slots=True)
class Fired:
    fault: Fault
    seen: int  # the how-many-th matching request this was, for seeded draws


class FaultBook:
    """The faults created through the admin API: one table field per name, so that adds and deletes
    from several workers at once are atomic (each a single store operation, not a read and a write
    of the whole set), and an order number per fault, because the first matching fault fires."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def created(self) -> list[Fault]:
        rows = sorted((await self._store.fields(_CREATED)).values(), key=lambda row: row["order"])
        return [Fault.model_validate(row["fault"]) for row in rows]

    async def add(self, fault: Fault, configured: list[Fault]) -> None:
        if any(f.name == fault.name for f in configured):
            raise InvalidRequestError(f"name: a fault named {fault.name!r} already exists")
        row = {"order": await self._store.incr(_ORDER), "fault": fault.model_dump()}
        if not await self._store.add_field(_CREATED, fault.name, row):
            raise InvalidRequestError(f"name: a fault named {fault.name!r} already exists")

    async def delete(self, name: str) -> bool:
        deleted = await self._store.delete_field(_CREATED, name)
        await self._store.delete(_seen_key(name))
        return deleted

    async def choose(self, target: Target, faults: list[Fault], *, seed: int, now: float) -> Fired | None:
        """The first of `faults` that fires for this request, if any (header faults: `header_fault`)."""
        for fault in faults:
            if not matches(fault, target):
                continue
            seen = await self._store.incr(_seen_key(fault.name)) if fault.counted else 1
            if fires(fault, seen, seed=seed, now=now):
                return Fired(fault, seen)
        return None


def parse_fault(data: Any, *, where: str | None = None) -> Fault:
    try:
        return Fault.model_validate(data)
    except ValidationError as exc:
        message = describe(exc)
        raise InvalidRequestError(f"{where}: {message}" if where else message) from None


def http_error_status(fault: Fault) -> int:
    """The status a fault of kind http_error or fast_outage answers with."""
    return 429 if fault.kind == "fast_outage" else fault.status


def http_error(fault: Fault, now: float, rate_limit_headers: Mapping[str, str] | None = None) -> APIError:
    """The error response a fault of kind http_error or fast_outage sends; `rate_limit_headers` are
    the caller's current rate-limit headers, which a 429 carries."""
    retry_after = fault.retry_after
    if fault.kind == "fast_outage" and retry_after is None:
        # Until the window ends, but never more than a minute: SDK2 sleeps any retry-after it gets,
        # and a client with default retries must not hang for the length of a long window.
        remaining = fault.end_at - now if fault.end_at is not None else 1.0
        retry_after = min(MAX_OUTAGE_RETRY_AFTER, max(1.0, remaining))
    outage = fault.kind == "fast_outage"
    message = fault.message
    if outage and not message:
        message = (
            "Fast mode is temporarily unavailable (capacity). Retry later or send the request without "
            'speed="fast".'
        )
    return injected_error(
        http_error_status(fault),
        error_type=None if outage else fault.error_type,
        message=message,
        retry_after=retry_after,
        retry_after_ms=fault.retry_after_ms,
        should_retry=fault.should_retry,
        rate_limit_headers=rate_limit_headers,
        limit="fast mode capacity" if outage else None,
    )


def injected_error(
    status: int,
    *,
    error_type: str | None = None,
    message: str | None = None,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    should_retry: bool | None = None,
    rate_limit_headers: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    limit: str | None = None,
) -> APIError:
    """An error sent because a fault or a test's script asked for it, one way for both: the status's
    own error type and a message per status unless given, `retry-after` (whole seconds, rounded up),
    `retry-after-ms` and `x-should-retry` when given, the caller's `rate_limit_headers` (a 429 carries
    them), then `headers` as given. `limit` names the exhausted limit of a 429."""
    sent: dict[str, str] = {}
    if retry_after is not None:
        sent["retry-after"] = str(math.ceil(retry_after))
    if retry_after_ms is not None:
        # Not :g, whose six digits sent 86400000 as 8.64e+07 and 1234567 as 1.23457e+06.
        sent["retry-after-ms"] = f"{retry_after_ms:.15g}"
    if should_retry is not None:
        sent["x-should-retry"] = "true" if should_retry else "false"
    if rate_limit_headers:
        sent.update(rate_limit_headers)
    if headers:
        sent.update(headers)
    text = message or _DEFAULT_MESSAGES.get(status, "Injected fault")
    if status == 429:
        return RateLimitError(text, headers=sent, error_type=error_type, limit=limit)
    return api_error_for_status(status, text, headers=sent, error_type=error_type)


def header_fault(
    value: str, known: list[Fault], retry_count: str | None, target: Target, *, seed: int, now: float
) -> Fired | None:
    """The fault a request's `x-mockserver-fault` header asks for, if it fires on this attempt.

    It targets and keeps its window as any fault does (`matches`, `fires`); only what counts as
    "seen" differs. `retry_count` is the `x-stainless-retry-count` header: attempt n of a logical
    request is its (n+1)-th, and a fault with `count: N` fires on attempts 0..N-1. A client that
    sends no retry count (curl, another SDK) is always on attempt 0."""
    fault = _from_header(value, known)
    if not matches(fault, target):
        return None
    seen = attempt_number(retry_count) + 1
    return Fired(fault, seen) if fires(fault, seen, seed=seed, now=now) else None


def attempt_number(retry_count: str | None) -> int:
    """The attempt an `x-stainless-retry-count` value names; 0 for one that is missing or unreadable.

    ASCII digits only, and few of them: `str.isdigit` also passes "²", which `int` refuses, and
    `int` of more than 4,300 digits raises; both were 500s. The journal reads it the same way."""
    if retry_count is None or not (retry_count.isascii() and retry_count.isdigit()):
        return 0
    return int(retry_count) if len(retry_count) <= _MAX_RETRY_COUNT_DIGITS else 0


_MAX_RETRY_COUNT_DIGITS = 9


def _from_header(value: str, known: list[Fault]) -> Fault:
    stripped = value.strip()
    if not stripped.startswith("{"):
        for fault in known:
            if fault.name == stripped:
                # A trigger over the server's stream of requests has no meaning for one request;
                # its targets and window still apply.
                return fault.model_copy(update={"every": None, "probability": None})
        raise InvalidRequestError(f"{FAULT_HEADER}: no fault named {stripped!r}")
    data = parse_json(stripped, what=f"the {FAULT_HEADER} header")
    for field in ("every", "probability"):
        if data.get(field) is not None:
            raise InvalidRequestError(
                f"{FAULT_HEADER}: {field}: not available for a header fault, which belongs to one "
                f"request; use count (attempts of this request, by {RETRY_COUNT_HEADER}) or add the "
                "fault with /_admin/faults"
            )
    return parse_fault({"name": "request-header", **data}, where=FAULT_HEADER)


def _seen_key(name: str) -> str:
    return f"faults:seen:{name}"
