"""The embedded bucket store: a dict of `BucketState` in this process."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mockserver.clock import Clock, SystemClock
from mockserver.limits import bucket
from mockserver.limits.bucket import Admission, BucketState, Draw


class MemoryBucketStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._states: dict[str, BucketState] = {}
        # Nothing awaits between read and write, which makes each call atomic within one event loop;
        # the lock extends that to callers on other threads (e.g. a test poking a running server).
        self._lock = threading.Lock()

    async def acquire(self, draws: Sequence[Draw], now: float | None = None) -> Admission:
        t = self._now(now)
        with self._lock:
            admission, new_states = bucket.decide(draws, self._states, t)
            self._states.update(new_states)
        return admission

    async def adjust(
        self, key: str, capacity: float, rate: float, delta: float, now: float | None = None
    ) -> float:
        t = self._now(now)
        with self._lock:
            state = bucket.adjust(self._states.get(key), capacity, rate, delta, t)
            self._states[key] = state
        return state.level

    async def levels(self, draws: Sequence[Draw], now: float | None = None) -> dict[str, float]:
        t = self._now(now)
        with self._lock:
            return {d.key: bucket.level_at(self._states.get(d.key), d.capacity, d.rate, t) for d in draws}

    async def reset(self) -> None:
        with self._lock:
            self._states.clear()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _now(self, now: float | None) -> float:
        return self._clock.now() if now is None else now
