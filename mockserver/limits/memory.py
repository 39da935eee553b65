"""The embedded bucket store: a dict of `BucketState` in this process.

A bucket that has refilled to full says nothing a missing bucket does not (a missing bucket is a
full one), so a sweep forgets those about once a minute of the store's clock: a server that meets
a new API key per request does not keep a bucket per key forever.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mockserver.clock import Clock, SystemClock
from mockserver.limits import bucket
from mockserver.limits.bucket import Admission, BucketState, Draw

# Seconds of the store's clock between sweeps: each one costs a pass over every bucket, so they are
# rare, and a bucket outlives its refill by up to this long (Redis keeps them a margin longer too).
SWEEP_INTERVAL = 60.0


class MemoryBucketStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._states: dict[str, BucketState] = {}
        # (capacity, rate) each bucket was last written with: what the sweep needs to tell it is full.
        self._shapes: dict[str, tuple[float, float]] = {}
        self._next_sweep = self._clock.now() + SWEEP_INTERVAL
        # Nothing awaits between read and write, which makes each call atomic within one event loop;
        # the lock extends that to callers on other threads (e.g. a test poking a running server).
        self._lock = threading.Lock()

    async def acquire(self, draws: Sequence[Draw], now: float | None = None) -> Admission:
        t = self._now(now)
        with self._lock:
            admission, new_states = bucket.decide(draws, self._states, t)
            if new_states:
                self._states.update(new_states)
                for d in draws:
                    self._shapes[d.key] = (d.capacity, d.rate)
            if t >= self._next_sweep:
                self._sweep(t)
        return admission

    async def adjust(
        self, key: str, capacity: float, rate: float, delta: float, now: float | None = None
    ) -> float:
        t = self._now(now)
        with self._lock:
            state = bucket.adjust(self._states.get(key), capacity, rate, delta, t)
            self._states[key] = state
            self._shapes[key] = (capacity, rate)
            if t >= self._next_sweep:
                self._sweep(t)
        return state.level

    async def levels(self, draws: Sequence[Draw], now: float | None = None) -> dict[str, float]:
        t = self._now(now)
        with self._lock:
            return {d.key: bucket.level_at(self._states.get(d.key), d.capacity, d.rate, t) for d in draws}

    async def reset(self) -> None:
        with self._lock:
            self._states.clear()
            self._shapes.clear()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _sweep(self, t: float) -> None:
        """Forget every bucket that is full at `t`: a missing bucket reads as full too. One stamped
        after `t` (the clock stepped back) is kept, because its refill only starts at that stamp."""
        self._next_sweep = t + SWEEP_INTERVAL
        full = [
            key
            for key, state in self._states.items()
            if state.updated <= t and bucket.level_at(state, *self._shapes[key], t) >= self._shapes[key][0]
        ]
        for key in full:
            del self._states[key]
            del self._shapes[key]

    def _now(self, now: float | None) -> float:
        return self._clock.now() if now is None else now
