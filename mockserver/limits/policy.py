"""Which buckets a request draws from, and every rate-limit spelling of the wire (headers, messages).

Fast mode has its own pool (reference §10.1): a fast request draws only from the fast input and
output buckets and does not count towards the standard limits. Output tokens are charged up front
from `max_tokens`; callers refund the unused part with `output_draw` + `BucketStore.adjust`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from mockserver.limits.bucket import Draw

Speed = Literal["standard", "fast"]

# Bucket kinds: the last segment of a bucket key.
REQUESTS = "rpm"
INPUT = "itpm"
OUTPUT = "otpm"

_KIND_NAMES = {
    REQUESTS: "requests per minute",
    INPUT: "input tokens per minute",
    OUTPUT: "output tokens per minute",
}
_KIND_UNITS = {REQUESTS: "requests", INPUT: "input tokens", OUTPUT: "output tokens"}

# Float noise in refill arithmetic must not turn a level of 60 into "59 remaining".
_REMAINING_EPSILON = 1e-6


@dataclass(frozen=True)
class LimitTable:
    requests_per_minute: int = 4000
    input_tokens_per_minute: int = 2_000_000
    output_tokens_per_minute: int = 400_000
    fast_input_tokens_per_minute: int = 1_000_000
    fast_output_tokens_per_minute: int = 200_000

    def limit(self, speed: Speed, kind: str) -> int:
        if speed == "fast":
            by_kind = {INPUT: self.fast_input_tokens_per_minute, OUTPUT: self.fast_output_tokens_per_minute}
        else:
            by_kind = {
                REQUESTS: self.requests_per_minute,
                INPUT: self.input_tokens_per_minute,
                OUTPUT: self.output_tokens_per_minute,
            }
        try:
            return by_kind[kind]
        except KeyError:
            raise ValueError(f"no {kind!r} limit for speed {speed!r}") from None


def bucket_key(org: str, model_class: str, speed: Speed, kind: str) -> str:
    return f"{org}:{model_class}:{speed}:{kind}"


def draws_for(
    org: str,
    speed: Speed,
    model_class: str,
    limits: LimitTable,
    input_tokens: int,
    max_tokens: int,
    output_tokens: int | None = None,
) -> list[Draw]:
    """The draws of one request, output last. Output is admitted on `max_tokens`; when the reply's
    `output_tokens` are already known, the unused part is refunded in the same step."""
    return bucket_plan(org, speed, model_class, limits).draws(input_tokens, max_tokens, output_tokens)


def output_draw(org: str, speed: Speed, model_class: str, limits: LimitTable, max_tokens: int = 0) -> Draw:
    """The output-token bucket of a request (the last of `draws_for`): refund with
    `store.adjust(d.key, d.capacity, d.rate, max_tokens - output_tokens)`."""
    _, key, capacity, rate = bucket_plan(org, speed, model_class, limits).buckets[-1]
    return Draw.known(key, capacity, rate, max_tokens)


Buckets = tuple[tuple[str, str, float, float], ...]
# How one family of headers is rendered: (bucket key, limit, refill rate per second, the limit as
# wire text, then the names of its limit, remaining and reset headers).
Family = tuple[str, int, float, bytes, bytes, bytes, bytes]


@dataclass(frozen=True, slots=True, eq=False)
class BucketPlan:
    """What every request of one organisation at one speed on one model class under one limit table
    shares: its buckets and how their headers are spelled. Only the costs and levels differ."""

    limits: LimitTable
    buckets: Buckets  # (kind, key, capacity, rate) of each bucket drawn from, output last
    families: tuple[Family, ...]  # in wire order
    combined: bool  # standard speed also reports input + output as one tokens family

    def draws(self, input_tokens: int, max_tokens: int, output_tokens: int | None = None) -> list[Draw]:
        refund = 0 if output_tokens is None or output_tokens >= max_tokens else max_tokens - output_tokens
        draws = []
        for kind, key, capacity, rate in self.buckets:
            if kind == OUTPUT:
                draws.append(Draw.known(key, capacity, rate, max_tokens, refund))
            else:
                draws.append(Draw.known(key, capacity, rate, 1 if kind == REQUESTS else input_tokens))
        return draws

    def headers(self, levels: Mapping[str, float], now: float) -> Headers:
        """The rate-limit headers of a response whose buckets stand at `levels` (a bucket missing
        from them is full), as raw (name, value) pairs in wire order."""
        return _render(self.families, self.combined, levels, now)


def bucket_plan(org: str, speed: Speed, model_class: str, limits: LimitTable) -> BucketPlan:
    """The memoised plan (checked once, by building its Draws). Keyed by the identity of `limits`,
    checked on use: hashing the table (a frozen dataclass) cost more than the lookup it served."""
    plan = _PLANS.get((org, speed, model_class, id(limits)))
    if plan is not None and plan.limits is limits:
        return plan
    if len(_PLANS) >= 4096:
        _PLANS.clear()
    plan = _PLANS[(org, speed, model_class, id(limits))] = _plan(org, speed, model_class, limits)
    return plan


_PLANS: dict[tuple[str, str, str, int], BucketPlan] = {}


def _plan(org: str, speed: Speed, model_class: str, limits: LimitTable) -> BucketPlan:
    buckets = _resolve(org, speed, model_class, limits)
    by_kind = {kind: (key, capacity, rate) for kind, key, capacity, rate in buckets}
    families = []
    for kind, names in _FAMILIES[speed]:
        key, capacity, rate = by_kind[kind]
        families.append((key, int(capacity), rate, _decimal(int(capacity)), *names))
    return BucketPlan(limits, buckets, tuple(families), speed != "fast")


def _resolve(org: str, speed: Speed, model_class: str, limits: LimitTable) -> Buckets:
    kinds = (INPUT, OUTPUT) if speed == "fast" else (REQUESTS, INPUT, OUTPUT)
    draws = [
        Draw.per_minute(bucket_key(org, model_class, speed, k), limits.limit(speed, k), 0) for k in kinds
    ]
    return tuple((kind, d.key, d.capacity, d.rate) for kind, d in zip(kinds, draws, strict=True))


@functools.lru_cache(maxsize=4096)
def _parse_key(key: str) -> tuple[str, str]:
    # Memoised: every response parses the keys of its draws, and the keys repeat.
    parts = key.rsplit(":", 2)
    if len(parts) != 3 or parts[2] not in _KIND_NAMES or parts[1] not in ("standard", "fast"):
        raise ValueError(f"not a rate-limit bucket key: {key!r}")
    return parts[1], parts[2]


def limit_name(key: str) -> str:
    """'fast mode output tokens per minute', 'requests per minute', ..."""
    speed, kind = _parse_key(key)
    return ("fast mode " if speed == "fast" else "") + _KIND_NAMES[kind]


def _header_names(prefix: str) -> tuple[bytes, bytes, bytes]:
    return f"{prefix}-limit".encode(), f"{prefix}-remaining".encode(), f"{prefix}-reset".encode()


# (kind, header names) of each family a response reports, in wire order; built once, not per request,
# and as bytes, the form they go on the wire in.
_FAMILIES = {
    "fast": (
        (INPUT, _header_names("anthropic-fast-input-tokens")),
        (OUTPUT, _header_names("anthropic-fast-output-tokens")),
    ),
    "standard": (
        (REQUESTS, _header_names("anthropic-ratelimit-requests")),
        (INPUT, _header_names("anthropic-ratelimit-input-tokens")),
        (OUTPUT, _header_names("anthropic-ratelimit-output-tokens")),
    ),
}
_COMBINED = _header_names("anthropic-ratelimit-tokens")


Headers = list[tuple[bytes, bytes]]


def rate_limit_headers(
    speed: Speed, limits: LimitTable, levels: Mapping[str, float], draws: Sequence[Draw], now: float
) -> dict[str, str]:
    """The rate-limit headers of a response (reference §10.2/§10.3) as a dict; see below."""
    return header_dict(rate_limit_header_list(speed, limits, levels, draws, now))


def header_dict(headers: Headers) -> dict[str, str]:
    """Raw (name, value) pairs as the str dict that errors and streaming responses take."""
    return {name.decode(): value.decode() for name, value in headers}


def rate_limit_header_list(
    speed: Speed, limits: LimitTable, levels: Mapping[str, float], draws: Sequence[Draw], now: float
) -> Headers:
    """The rate-limit headers of a response as raw (name, value) pairs, in wire order. A bucket
    missing from `levels` or `draws` is reported full, at the limit in `limits`. (Admission uses
    `BucketPlan.headers`, the same rendering with the spellings worked out once.)"""
    by_kind = {d.key.rpartition(":")[2]: d for d in draws}
    families: list[Family] = []
    for kind, names in _FAMILIES[speed]:
        draw = by_kind.get(kind)
        if draw is None:
            limit = limits.limit(speed, kind)
            families.append(("", limit, limit / 60.0, _decimal(limit), *names))
        else:
            limit = int(draw.capacity)
            families.append((draw.key, limit, draw.rate, _decimal(limit), *names))
    return _render(families, speed != "fast", levels, now)


def _render(families: Sequence[Family], combined: bool, levels: Mapping[str, float], now: float) -> Headers:
    headers: Headers = []
    states: list[tuple[int, int, float]] = []  # (limit, remaining, full at) of each family
    for key, limit, rate, limit_text, limit_name_, remaining_name, reset_name in families:
        level = levels.get(key, limit)
        # int() is floor for the positive levels it sees; a level never exceeds its limit.
        remaining = int(level + _REMAINING_EPSILON) if level > 0 else 0
        full_at = now + (limit - level) / rate if level < limit else now  # seconds_until_full, inlined
        headers += (
            (limit_name_, limit_text),
            (remaining_name, b"%d" % remaining),
            (reset_name, _reset_value(math.ceil(full_at))),
        )
        states.append((limit, remaining, full_at))
    if not combined:
        return headers
    # The combined limit is input + output (reference example); its remaining and reset follow the
    # more restrictive of the two, scaled to the combined limit so a full pair reads limit/limit.
    inputs, outputs = states[1], states[2]
    tightest = inputs if inputs[1] / inputs[0] <= outputs[1] / outputs[0] else outputs
    total = inputs[0] + outputs[0]
    headers += (
        (_COMBINED[0], _decimal(total)),
        (_COMBINED[1], b"%d" % math.floor(total * tightest[1] / tightest[0])),
        (_COMBINED[2], _reset_value(math.ceil(tightest[2]))),
    )
    return headers


@functools.lru_cache(maxsize=256)
def _decimal(number: int) -> bytes:
    return b"%d" % number  # limits repeat on every response


@functools.lru_cache(maxsize=256)
def _reset_value(second: int) -> bytes:
    # Rounded up by the caller: the reset time promises the bucket is full by then.
    return _rfc3339_second(second).encode()


def rfc3339(timestamp: float) -> str:
    # Rounded up: the reset time promises the bucket is full by then.
    return _rfc3339_second(math.ceil(timestamp))


@functools.lru_cache(maxsize=256)
def _rfc3339_second(second: int) -> str:
    # Every response renders several reset times, mostly the same few seconds: format each once.
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up and at least 1. A wait that never ends (a request larger than the
    limit) is reported as one full refill period, since clients honour long retry-after values."""
    if not math.isfinite(seconds):
        return "60"
    return str(max(1, math.ceil(seconds)))


def rejection_message(limiting_key: str, limit_value: float, never_fits: bool, cost: float) -> str:
    speed, kind = _parse_key(limiting_key)
    name = limit_name(limiting_key)
    limit = f"{int(limit_value):,}"
    fast = speed == "fast"
    if never_fits:
        units = ("fast mode " if fast else "") + _KIND_UNITS[kind]
        remedy = {OUTPUT: "lower max_tokens", INPUT: "shorten the prompt"}.get(kind, "split the work")
        fallback = ', or send it without speed="fast" to use standard limits' if fast else ""
        return (
            f"This request needs {math.ceil(cost):,} {units} but your organization's rate limit is "
            f"{limit} {name}, so it can never be admitted. To proceed, {remedy}{fallback}."
        )
    advice = (
        'Retry after the delay in the retry-after header, or send the request without speed="fast" '
        "to fall back to standard speed."
        if fast
        else "Retry after the delay in the retry-after header."
    )
    return f"This request would exceed your organization's rate limit of {limit} {name}. {advice}"
