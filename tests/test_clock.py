"""FakeClock: a sleeper is counted once the loop turn it went to sleep in has ended."""

from __future__ import annotations

import asyncio

from mockserver.clock import FakeClock


def test_a_sleeper_is_counted_after_the_callbacks_queued_before_it() -> None:
    # The order of a stream that writes and then sleeps: the transport's flush of the write is
    # queued first. A test that sees the sleeper must be able to read what it wrote.
    async def scenario() -> tuple[list[int], int]:
        clock = FakeClock(start=100.0)
        seen_by_flush: list[int] = []

        async def stream() -> None:
            asyncio.get_running_loop().call_soon(lambda: seen_by_flush.append(clock.pending_sleepers))
            await clock.sleep(5)

        task = asyncio.ensure_future(stream())
        for _ in range(3):
            await asyncio.sleep(0)
        counted = clock.pending_sleepers
        clock.advance(5)
        await asyncio.wait_for(task, 1)
        return seen_by_flush, counted

    assert asyncio.run(scenario()) == ([0], 1)


def test_a_deadline_the_clock_passes_before_the_sleeper_is_counted_still_wakes_it() -> None:
    async def scenario() -> tuple[int, float]:
        clock = FakeClock(start=100.0)
        task = asyncio.ensure_future(clock.sleep(5))
        await asyncio.sleep(0)  # the task is asleep; the clock has not counted it yet
        clock.advance(10)  # (from the driving thread, this can happen at any moment)
        await asyncio.wait_for(task, 1)
        return clock.pending_sleepers, clock.now()

    assert asyncio.run(scenario()) == (0, 110.0)


def test_a_sleeper_cancelled_before_it_is_counted_is_never_counted() -> None:
    async def scenario() -> tuple[int, float | None]:
        clock = FakeClock(start=100.0)
        task = asyncio.ensure_future(clock.sleep(5))
        await asyncio.sleep(0)
        task.cancel()
        for _ in range(3):
            await asyncio.sleep(0)
        assert task.cancelled()
        return clock.pending_sleepers, clock.next_deadline()

    assert asyncio.run(scenario()) == (0, None)


def test_a_past_deadline_returns_at_once() -> None:
    async def scenario() -> int:
        clock = FakeClock(start=100.0)
        await asyncio.wait_for(clock.sleep_until(99.0), 1)
        await asyncio.wait_for(clock.sleep(0), 1)
        return clock.pending_sleepers

    assert asyncio.run(scenario()) == 0
