"""Injected time: every timed decision in mockserver reads a `Clock`, never `time` directly.

`SystemClock` is the production clock. `FakeClock` only moves when a test calls `advance()`, which
may happen from another thread (the pytest thread drives a server running in its own event loop),
so waking sleepers is routed through each sleeper's own loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


class FakeClock:
    """A clock that stands still until told to move; sleepers wake when time passes their deadline."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # For a thread that drives the clock (testing's ClockDriver): told of each sleeper counted.
        self._counted = 0
        self._sleeper_counted = threading.Condition(self._lock)

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            due = []
            while self._sleepers and self._sleepers[0][0] <= self._now:
                due.append(heapq.heappop(self._sleepers))
        for _, _, loop, future in due:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def set(self, timestamp: float) -> None:
        self.advance(max(0.0, timestamp - self.now()))

    @property
    def pending_sleepers(self) -> int:
        with self._lock:
            return len(self._sleepers)

    def wait_for_sleeper(self, seen: int, timeout: float) -> int:
        """Block until a sleeper has been counted beyond the first `seen`, `timeout` seconds pass or
        `wake_waiters` is called; returns how many sleepers have been counted so far."""
        with self._sleeper_counted:
            if self._counted == seen:
                self._sleeper_counted.wait(timeout)
            return self._counted

    def wake_waiters(self) -> None:
        with self._sleeper_counted:
            self._sleeper_counted.notify_all()

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._sleepers[0][0] if self._sleepers else None

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if deadline <= self._now:
                return
        future: asyncio.Future[None] = loop.create_future()
        # Counted (and wakeable) from the next pass of its loop, once the callbacks queued before it
        # have run: among them the flush of what its task wrote before sleeping (mockserver's
        # transport sends a loop turn's writes at the turn's end), so a test that sees every stream
        # asleep can read everything they sent.
        loop.call_soon(self._add_sleeper, deadline, loop, future)
        try:
            await future
        finally:
            # A cancelled task cancels the future it awaits first, so `done()` is already true here.
            if not future.done() or future.cancelled():
                future.cancel()
                with self._lock:
                    self._sleepers = [s for s in self._sleepers if s[3] is not future]
                    heapq.heapify(self._sleepers)

    def _add_sleeper(
        self, deadline: float, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> None:
        with self._lock:
            if future.done():  # cancelled before it was counted
                return
            if deadline > self._now:
                heapq.heappush(self._sleepers, (deadline, next(self._order), loop, future))
                self._counted += 1
                self._sleeper_counted.notify_all()
                return
        future.set_result(None)  # the clock passed the deadline before this pass

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + seconds)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
