"""`ClockDriver`: a thread that watches a test server's `FakeClock` and moves it when asked to.

The pytest plugin starts one for each server on a fake clock (`fake_clock=True` or `"auto"`). It
sleeps until the clock counts a new sleeper (each step of a stream is one), with a coarse poll
besides, so that it takes the GIL from the server only when there may be something to do.
"""

from __future__ import annotations

import threading
import time

from mockserver.clock import FakeClock
from mockserver.server import MockServer

FAKE_CLOCK_STALL_SECONDS = 2.0  # real seconds a server may wait on a fake clock nobody advances


class FakeClockStalled(Exception):
    """Requests waited on a test server's fake clock that the test never advanced."""


class ClockDriver:
    """Watches a test server's `FakeClock` from a thread of its own, and moves it when asked to.

    "Every request asleep" is when the clock has at least as many sleepers as the server has requests
    in flight (a sleeper is counted only once what its request wrote is on the socket). Then, with
    `auto` on, the clock jumps to the next deadline; with it off, the server is stalled, and after
    `stall_after` real seconds of that without the test moving the clock (None: never), the stall is
    noted (the test fails with it) and auto-advance takes over so that the test ends instead of
    hanging.
    """

    # Besides each new sleeper, the clock is looked at this often while anything is in flight or
    # asleep (a request that ends while the others sleep tells the clock nothing; a stall is timed),
    # and seldom while nothing is (a request that comes in and sleeps is a new sleeper).
    BUSY_POLL_SECONDS = 0.01
    IDLE_POLL_SECONDS = 0.25

    def __init__(
        self,
        clock: FakeClock,
        server: MockServer,
        *,
        auto: bool,
        stall_after: float | None = FAKE_CLOCK_STALL_SECONDS,
    ) -> None:
        self.clock = clock
        self.server = server
        self.url = server.url
        self.auto = auto
        self.stall_after = stall_after
        self.stalls: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake clock of {self.url}", daemon=True)

    def start(self) -> ClockDriver:
        self._thread.start()
        return self

    def release(self) -> None:
        """Move the clock to each deadline from now on, without noting stalls: what a server that is
        stopping needs, so that a stream still asleep on the clock ends instead of holding it up."""
        self.stall_after = None
        self.auto = True
        self.clock.wake_waiters()

    def stop(self) -> None:
        self._stop.set()
        self.clock.wake_waiters()
        self._thread.join()

    def take_stalls(self) -> list[str]:
        stalls, self.stalls = self.stalls, []
        return stalls

    def _run(self) -> None:
        stalled_since: float | None = None  # real time since when every request waits, at `stalled_at`
        stalled_at = 0.0  # the clock's time then: a test that moves the clock is driving it
        seen = 0  # sleepers the clock had counted when last looked at
        poll = self.IDLE_POLL_SECONDS
        while not self._stop.is_set():
            seen = self.clock.wait_for_sleeper(seen, poll)
            if self._stop.is_set():
                return
            sleepers, in_flight = self.clock.pending_sleepers, self.server.requests_in_flight
            poll = self.BUSY_POLL_SECONDS if sleepers or in_flight else self.IDLE_POLL_SECONDS
            if not sleepers or in_flight > sleepers:
                stalled_since = None  # nothing waits, or something is still running
                continue
            deadline = self.clock.next_deadline()
            if self.auto:
                if deadline is not None:
                    self.clock.set(deadline)
                continue
            if self.stall_after is None:
                continue
            now = self.clock.now()
            if stalled_since is None or now != stalled_at:
                stalled_since, stalled_at = time.monotonic(), now
            elif time.monotonic() - stalled_since >= self.stall_after:
                self.stalls.append(self._stall_message(sleepers, now, deadline, self.stall_after))
                self.auto = True

    def _stall_message(self, sleepers: int, now: float, deadline: float | None, waited: float) -> str:
        ahead = "" if deadline is None else f"; the next deadline is {deadline - now:.3g} s ahead"
        return (
            f"mockserver at {self.url}: {sleepers} request(s) waited {waited:g} s on the "
            f"server's fake clock, which the test did not advance (it stood at {now:.3f}{ahead}). "
            "Advance it in the test (mockserver.clock.advance(seconds), or "
            "mockserver.clock.set(mockserver.clock.next_deadline())), or let it move to each deadline by "
            'itself: @pytest.mark.mockserver(fake_clock="auto") or mockserver.auto_advance(). It was '
            "advanced automatically from then on, so that the test could end. (A test that holds the "
            "clock on purpose can wait longer: @pytest.mark.mockserver(fake_clock=True, "
            "fake_clock_stall=<seconds or None>).)"
        )
