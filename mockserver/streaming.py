"""Delivery of a reply in modelled time: as a paced SSE stream, or as the wait before a JSON body."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import anyio

from mockserver.catalog import speed_profile
from mockserver.clock import Clock
from mockserver.events import Event, error_event, reply_events
from mockserver.faults import Fault
from mockserver.pacing import Pace, Pacer, make_pace, schedule
from mockserver.replies import Reply, TextPart, ThinkingPart
from mockserver.runtime import Runtime
from mockserver.settings import ModelEntry
from mockserver.sse import encode_event, encode_events

OnFinish = Callable[[int], Awaitable[None]]


# A data line cut off mid-JSON: the SDK's SSE decoder fails on it the way it would on a corrupted stream.
MALFORMED_CHUNK = b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "del\n\n'


# A marker between two events of the stream where a fault strikes. It carries no tokens, so the
# schedule flushes any delta run at it and never merges deltas across it; it is never sent.
_STRIKE = Event("~strike", {}, 0)


def _with_strike(events: Iterable[Event], after_tokens: int) -> Iterator[Event]:
    produced = 0
    placed = False
    for index, event in enumerate(events):
        if not placed and index > 0 and produced >= after_tokens:  # never before message_start
            yield _STRIKE
            placed = True
        yield event
        produced += event.tokens


def _index_of_strike(events: list[Event]) -> int | None:
    for index, event in enumerate(events):
        if event is _STRIKE:
            return index
    return None


async def _strike(fault: Fault, drop_connection: Callable[[], None] | None) -> AsyncIterator[bytes]:
    """What a stream fault sends (or does) when it strikes; the stream ends after it."""
    if fault.kind == "stream_error":
        error_type = fault.error_type or "overloaded_error"
        yield encode_event(error_event(error_type, fault.message or "Overloaded"))
    elif fault.kind == "malformed":
        yield MALFORMED_CHUNK
    elif fault.kind == "stream_reset" and drop_connection is not None:
        drop_connection()
    # "truncate": nothing more, no message_delta or message_stop: the body simply ends.


def reply_pace(reply: Reply, runtime: Runtime, model: ModelEntry) -> Pace:
    profile = speed_profile(model, reply.usage.speed)
    return make_pace(profile, runtime.settings.timing, jitter_seed(reply, runtime.settings.seed))


def jitter_seed(reply: Reply, server_seed: int) -> int:
    """A seed from what the reply says, not its speed: fast and standard share their TTFT draw."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{server_seed}\0{reply.model}\0".encode())
    for part in reply.parts:
        if isinstance(part, TextPart | ThinkingPart):
            digest.update(part.type.encode() + b"\0" + "".join(part.pieces).encode() + b"\0")
        else:
            digest.update(f"tool_use\0{part.id}\0{part.name}\0".encode() + "".join(part.pieces).encode())
    return int.from_bytes(digest.digest(), "big")


def generation_seconds(reply: Reply, runtime: Runtime, model: ModelEntry) -> float:
    """How long the whole reply takes: when the stream for it would deliver its last token."""
    return reply_pace(reply, runtime, model).duration(reply.usage.output_tokens)


async def stream_reply(
    reply: Reply,
    message_id: str,
    runtime: Runtime,
    clock: Clock,
    model: ModelEntry,
    *,
    on_finish: OnFinish | None = None,
    fault: Fault | None = None,
    drop_connection: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body for `reply`, paced on `clock`; `on_finish(tokens sent)` is awaited exactly once.

    A client that goes away makes Starlette cancel this generator wherever it waits (or close it at
    its `yield`); either way the `finally` reports the tokens that had been handed to the server.
    A stream `fault` strikes once `fault.after_tokens` tokens (or all of them, if fewer) were sent.
    """
    sent = 0
    events_in_order = reply_events(reply, message_id)
    if fault is not None:
        events_in_order = _with_strike(events_in_order, min(fault.after_tokens, reply.usage.output_tokens))
    try:
        pacer = Pacer(schedule(events_in_order, reply_pace(reply, runtime, model)), clock.now())
        while not pacer.done:
            await clock.sleep_until(pacer.next_deadline)
            events = pacer.take(clock.now())
            if fault is not None and (cut := _index_of_strike(events)) is not None:
                head, events = events[:cut], events[cut + 1 :]
                if head:
                    sent += sum(event.tokens for event in head)
                    yield encode_events(head)
                if fault.kind != "stall":
                    async for chunk in _strike(fault, drop_connection):
                        yield chunk
                    return
                await clock.sleep(fault.stall_seconds)  # then carry on: what fell due goes out at once
                if not events:
                    continue
            if len(events) == 1:  # the common case, once per token: no generator, no join
                sent += events[0].tokens
                yield encode_event(events[0])
            else:
                sent += sum(event.tokens for event in events)
                yield encode_events(events)
    finally:
        if on_finish is not None:
            # Starlette cancels through an anyio scope, which would cancel any await here again at
            # once; the shield lets the report finish (a plain asyncio cancel is delivered only once).
            with anyio.CancelScope(shield=True):
                await on_finish(sent)
