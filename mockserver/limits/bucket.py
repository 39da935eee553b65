"""Continuous token-bucket math, with `now` always passed in so it is pure and replayable.

A bucket is `(level, updated)`; between writes it refills at `rate` tokens per second up to
`capacity`. A missing bucket is a full one, which lets stores forget idle buckets for free.

`redis.lua` repeats this arithmetic expression for expression, so both stores give bit-identical
answers; change the two together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

# Refunds and charges from `adjust` may leave a bucket in debt, but never by more than one full
# capacity: a buggy or surprising correction then costs at most one extra refill period of waiting.
DEBT_LIMIT_FACTOR = 1.0


class _DrawFields(NamedTuple):
    key: str
    capacity: float
    cost: float
    rate: float
    refund: float


class Draw(_DrawFields):
    """`cost` tokens wanted from bucket `key`; `rate` defaults to refilling `capacity` per minute.

    `refund` (at most `cost`) is given back at once if the draw is admitted: a request whose output
    is already known is admitted on its `max_tokens` estimate but charged what it produced, in one
    step that leaves the bucket exactly where charging and then `adjust`ing it at the same instant would.

    A named tuple, not a frozen dataclass: every request builds two or three, and a tuple is built
    in one step where the dataclass took a checked assignment per field.
    """

    __slots__ = ()

    def __new__(
        cls, key: str, capacity: float, cost: float, rate: float = math.nan, refund: float = 0.0
    ) -> Draw:
        # Plain floats everywhere, so levels compare and serialise alike whatever callers pass in.
        capacity, cost, refund = float(capacity), float(cost), float(refund)
        # NaN marks "not given": it is a float (so `rate` stays typed `float`) and never valid.
        rate = capacity / 60.0 if math.isnan(rate) else float(rate)
        if not (math.isfinite(capacity) and capacity > 0):
            raise ValueError(f"bucket {key!r}: capacity must be positive, got {capacity!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"bucket {key!r}: rate must be positive, got {rate!r}")
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"bucket {key!r}: cost must be non-negative, got {cost!r}")
        _check_refund(key, cost, refund)
        return tuple.__new__(cls, (key, capacity, cost, rate, refund))

    @classmethod
    def per_minute(cls, key: str, limit: float, cost: float) -> Draw:
        return cls(key, float(limit), float(cost), limit / 60.0)

    @classmethod
    def known(cls, key: str, capacity: float, rate: float, cost: float, refund: float = 0.0) -> Draw:
        """A draw on a bucket whose capacity and rate came from an already checked Draw: only the
        cost is checked, because `__new__`'s checks were a measurable part of every request."""
        cost, refund = float(cost), float(refund)
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"bucket {key!r}: cost must be non-negative, got {cost!r}")
        if refund:
            _check_refund(key, cost, refund)
        return tuple.__new__(cls, (key, capacity, cost, rate, refund))


def _check_refund(key: str, cost: float, refund: float) -> None:
    if not (math.isfinite(refund) and 0 <= refund <= cost):
        raise ValueError(f"bucket {key!r}: refund must be between 0 and the cost {cost!r}, got {refund!r}")


# Not frozen, like Admission below: built for every request, and a frozen __init__ costs 4x.
# Treat them as immutable.
@dataclass(slots=True)
class BucketState:
    level: float
    updated: float


@dataclass(slots=True)
class Admission:
    admitted: bool
    levels: dict[str, float]
    retry_after: float = 0.0
    limiting: str | None = None
    never_fits: bool = False


def level_at(state: BucketState | None, capacity: float, rate: float, now: float) -> float:
    if state is None:
        return capacity
    # A clock that steps backwards (replicas, NTP) must not refill twice, hence max(0, ...).
    return min(capacity, state.level + rate * max(0.0, now - state.updated))


def seconds_until_full(level: float, capacity: float, rate: float) -> float:
    return max(0.0, (capacity - level) / rate)


def decide(
    draws: Sequence[Draw], states: Mapping[str, BucketState | None], now: float
) -> tuple[Admission, dict[str, BucketState]]:
    """Admit all draws or none. The returned states are the ones to write: empty on rejection,
    because an unwritten bucket keeps refilling exactly as if its refilled level had been stored."""
    # Fast path, the common case: every draw fits. Anything else (a duplicate key, a draw that does
    # not fit now or ever) falls through to the full decision below, which gives the same answer.
    # `level_at` and `_stamp` are inlined here: this loop runs for every request.
    levels: dict[str, float] = {}
    new_states: dict[str, BucketState] = {}
    for d in draws:
        key = d.key
        state = states.get(key)
        if state is None:
            level, stamp = d.capacity, now
        else:
            updated = state.updated
            if now > updated:
                level, stamp = min(d.capacity, state.level + d.rate * (now - updated)), now
            else:  # level_at's max(0.0, now - updated) is 0: no refill; _stamp keeps `updated`
                level, stamp = min(d.capacity, state.level), updated
        if d.cost > level or key in levels:
            break
        left = level - d.cost
        if d.refund:
            left = clamp_level(left + d.refund, d.capacity)
        levels[key] = left
        new_states[key] = BucketState(left, stamp)
    else:
        return Admission(True, levels), new_states
    check_unique(draws)
    current = {d.key: level_at(states.get(d.key), d.capacity, d.rate, now) for d in draws}

    never = [d for d in draws if d.cost > d.capacity]
    if never:
        return Admission(False, current, math.inf, never[0].key, True), {}

    if all(d.cost <= current[d.key] for d in draws):
        levels = {d.key: clamp_level(current[d.key] - d.cost + d.refund, d.capacity) for d in draws}
        new_states = {d.key: BucketState(levels[d.key], _stamp(states.get(d.key), now)) for d in draws}
        return Admission(True, levels), new_states

    # Starting below zero names a limiting bucket even when a tiny deficit's wait underflows to 0.
    retry_after, limiting = -1.0, None
    for d in draws:
        if d.cost > current[d.key]:
            state = states.get(d.key)
            # If `updated` is ahead of `now`, refilling only starts at `updated`.
            lag = max(0.0, state.updated - now) if state is not None else 0.0
            wait = lag + (d.cost - current[d.key]) / d.rate
            if wait > retry_after:
                retry_after, limiting = wait, d.key
    retry_after = _exactly_enough(draws, states, now, retry_after)
    return Admission(False, current, retry_after, limiting, False), {}


def adjust(state: BucketState | None, capacity: float, rate: float, delta: float, now: float) -> BucketState:
    """Add `delta` tokens (refund > 0, extra charge < 0). Refunds stop at `capacity`; charges may
    leave the bucket in debt down to `-capacity`, which delays later admissions until it refills."""
    level = level_at(state, capacity, rate, now) + delta
    return BucketState(clamp_level(level, capacity), _stamp(state, now))


def clamp_level(level: float, capacity: float) -> float:
    return max(-DEBT_LIMIT_FACTOR * capacity, min(capacity, level))


def check_unique(draws: Sequence[Draw]) -> None:
    keys = [d.key for d in draws]
    if len(set(keys)) != len(keys):
        raise ValueError(f"each bucket may be drawn from once per request, got keys {keys!r}")


def _stamp(state: BucketState | None, now: float) -> float:
    # `updated` never moves backwards, so refill already credited is not credited again.
    return now if state is None else max(now, state.updated)


def _exactly_enough(
    draws: Sequence[Draw], states: Mapping[str, BucketState | None], now: float, wait: float
) -> float:
    """Nudge `wait` up until decide(now + wait) really admits: the closed-form wait can fall an ulp
    short after rounding, and a client that obeys retry-after must not be rejected again."""
    step = max(wait, abs(now), 1.0) * 2.0**-52
    for _ in range(200):
        t = now + wait
        if all(d.cost <= level_at(states.get(d.key), d.capacity, d.rate, t) for d in draws):
            return wait
        wait += step
        step *= 2.0
    return wait
