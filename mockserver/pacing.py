"""Pacing: a speed profile becomes absolute deadlines for a stream's events (pure; `streaming` awaits them).

Token k (counted from 0) of a reply is due `ttft + k / otps` seconds after the stream starts. Every
deadline is computed from the start, never by adding up sleeps, so a late wakeup never pushes back
the tokens after it (no drift). Two rules keep the number of SSE frames sane:

* the schedule (`schedule`, pure) merges tokens of one block that fall due closer together than
  `min_event_interval` into one delta, sent when the last of them is due (deltas go out at least
  that interval apart, except a block's last one, which nothing could join);
* the walker (`Pacer`) sends everything already due as one merged batch when it wakes up late, so
  an overloaded server sends fewer, larger deltas and stays on time instead of falling behind.

Events carrying no tokens (block start/stop, message_delta, ...) go out with the tokens before
them; those before the first token go out at once, so a client sees `message_start` immediately
and then waits the time to first token (with pings every `ping_interval`, if set; a late wake-up
sends one ping, however many fell due, and pings come at most every millisecond of the clock).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

from mockserver.catalog import SpeedProfile
from mockserver.events import PING_EVENT, Event, merge_deltas
from mockserver.settings import MAX_WAIT_SECONDS, TimingSettings

Jitter = Literal["none", "uniform", "normal", "lognormal"]

# Deadlines are sums of floats; a token due a rounding error after a batch still belongs in it.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Pace:
    """A stream's timing, in seconds of the injected clock (already divided by `time_scale`)."""

    ttft: float
    token_seconds: float  # 1 / output tokens per second
    min_event_interval: float = 0.0
    ping_interval: float = 0.0  # 0: no pings besides the one after the first block start

    def token_due(self, index: int) -> float:
        return self.ttft + index * self.token_seconds

    def duration(self, tokens: int) -> float:
        """When the last of `tokens` output tokens is due: what a non-streaming reply waits."""
        return self.token_due(max(tokens - 1, 0))


def make_pace(profile: SpeedProfile, timing: TimingSettings, seed: int) -> Pace:
    """The pace of one reply; `seed` fixes its TTFT jitter, so a repeated request repeats its timing."""
    scale = timing.time_scale
    ttft = jittered(profile.ttft_seconds, timing.ttft_jitter, timing.ttft_jitter_width, seed)
    return Pace(
        ttft=ttft / scale,
        token_seconds=1.0 / (profile.output_tokens_per_second * scale),
        # The frame limits scale too, so a faster-run profile keeps the same shape of stream.
        min_event_interval=timing.min_event_interval / scale,
        ping_interval=timing.ping_interval / scale,
    )


def jittered(ttft: float, distribution: Jitter, width: float, seed: int) -> float:
    """`ttft` times a random factor of relative spread `width`, drawn from `distribution`.

    uniform: 1 ± width; normal: mean 1, sd width; lognormal: mean 1, log-sd width (a long right
    tail, as real queueing delays have). Never negative, and never beyond `MAX_WAIT_SECONDS`.
    """
    if distribution == "none" or width == 0 or ttft == 0:
        return ttft
    rng = random.Random(seed)
    if distribution == "uniform":
        factor = 1.0 + rng.uniform(-width, width)
    elif distribution == "normal":
        factor = 1.0 + rng.gauss(0.0, width)
    else:
        factor = math.exp(rng.gauss(0.0, width) - width * width / 2)
    # The cap: a wide normal draw can be many times the mean, and a TTFT no row may set should
    # not come in through its jitter.
    return min(ttft * max(factor, 0.0), max(ttft, MAX_WAIT_SECONDS))


class Timed(NamedTuple):  # a tuple, not a dataclass: one is made per token of every stream
    at: float  # seconds after the start of the stream
    event: Event
    keepalive: bool = False  # a ping of the `ping_interval` cadence (not the one the real API sends)


def schedule(events: Iterable[Event], pace: Pace) -> Iterator[Timed]:
    """The stream as timed events, in order, deltas coalesced by `min_event_interval`, pings added.

    Lazy: a stream holds one reply, not one object per token it is still to send.
    """
    return _with_pings(_coalesced(events, pace), pace.ping_interval)


def _coalesced(events: Iterable[Event], pace: Pace) -> Iterator[Timed]:
    # Runs once per token of every stream: attribute lookups are hoisted and the arithmetic of
    # `Pace.token_due` is inlined on purpose.
    ttft, step, interval = pace.ttft, pace.token_seconds, pace.min_event_interval
    produced = 0  # tokens scheduled so far
    earliest = -math.inf  # the next delta goes out no sooner than min_event_interval after the last
    latest = 0.0  # when the latest item goes out: events without tokens follow it
    run: list[Event] = []  # token deltas waiting to go out together at `run_at`
    run_at = 0.0
    run_due = 0.0  # when the last token of the run is due
    for event in events:
        tokens = event.tokens
        if not tokens:
            if run:
                # The block's last delta: nothing can join it any more, so holding it back for the
                # interval would only delay the end of the block.
                latest = max(run_due, latest)
                yield Timed(latest, run[0] if len(run) == 1 else merge_deltas(run))
                earliest, run = latest + interval, []
            yield Timed(latest, event)
            continue
        produced += tokens
        due = ttft + (produced - 1) * step  # of the event's last token
        if run and due <= run_at + _EPSILON and run[-1].mergeable_with(event):
            run.append(event)  # due by the time the run goes out anyway
            run_due = due
            continue
        if run:
            yield Timed(run_at, run[0] if len(run) == 1 else merge_deltas(run))
            latest, earliest = run_at, run_at + interval
        run, run_at, run_due = [event], (due if due > earliest else earliest), due
    if run:
        yield Timed(max(run_due, latest), merge_deltas(run))


def _with_pings(items: Iterable[Timed], interval: float) -> Iterator[Timed]:
    # Pings at fixed multiples of the interval from the start, until the stream's last event; one
    # falling due with another event is left out, as that event already shows the stream is alive.
    if not 0 < interval < math.inf:
        return iter(items)
    return _Pinged(items, max(interval, MIN_PING_INTERVAL))


# Keepalives closer together than this (seconds of the clock) keep nothing more alive; the floor
# keeps a long wait from waking for a ping on every turn of the event loop, and the count of
# `_Pinged.skip_until` finite.
MIN_PING_INTERVAL = 0.001


class _Pinged:
    """`items` with the keepalive pings of `_with_pings` between them: an iterator a `Pacer` can tell
    to skip the pings a late wake-up would drop anyway. Counting them off one by one instead held the
    event loop for as many pings as had fallen due (a ping_interval of 1e-9 s froze the server), and
    a wait without end between two pings without end never came back at all."""

    def __init__(self, items: Iterable[Timed], interval: float) -> None:
        self._items = iter(items)
        self._interval = interval
        self._count = 1  # the next ping is due at count * interval: multiplied, not summed (no drift)
        self._pending: Timed | None = None  # the next item of `items`, once a ping went ahead of it

    def __iter__(self) -> _Pinged:
        return self

    def __next__(self) -> Timed:
        item = self._pending or next(self._items)
        self._pending = None
        while (ping_at := self._count * self._interval) <= item.at:
            self._count += 1
            if ping_at < item.at:
                self._pending = item
                return Timed(ping_at, PING_EVENT, keepalive=True)
        return item

    def skip_until(self, at: float) -> None:
        """Leave out the pings due by `at` (seconds from the start) that are still to come."""
        if at > 0:
            self._count = max(self._count, math.floor(at / self._interval) + 1)


class Pacer:
    """Walks a schedule from `start` (a clock reading): sleep until `next_deadline`, then `take(now)`."""

    def __init__(self, items: Iterable[Timed], start: float) -> None:
        self._items = iter(items)
        self._start = start
        self._next: Timed | None = next(self._items, None)

    @property
    def done(self) -> bool:
        return self._next is None

    @property
    def next_deadline(self) -> float:
        assert self._next is not None, "the schedule is exhausted"
        return self._start + self._next.at

    def take(self, now: float) -> list[Event]:
        """The next item and every other item due by `now`, merged: one batch, one write."""
        first = self._next
        assert first is not None, "the schedule is exhausted"
        if isinstance(self._items, _Pinged):  # one ping at most goes out per wake-up: skip the rest
            self._items.skip_until(now - self._start)
        following = self._next = next(self._items, None)
        if following is None or self._start + following.at > now:
            return [first.event]  # on time: the common case, kept cheap
        batch = [first]
        while following is not None and self._start + following.at <= now:
            batch.append(following)
            following = self._next = next(self._items, None)
        return catch_up(batch)


def catch_up(batch: list[Timed]) -> list[Event]:
    """A late batch as few events as possible: deltas of one block merged, keepalives only if alone."""
    events = [item.event for item in batch if not item.keepalive]
    if not events:
        return [PING_EVENT]  # only keepalives fell due: one is enough
    merged: list[Event] = []
    run: list[Event] = []
    for event in events:
        if run and run[-1].mergeable_with(event):
            run.append(event)
            continue
        if run:
            merged.append(merge_deltas(run))
        run = [event]
    merged.append(merge_deltas(run))
    return merged
