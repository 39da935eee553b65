"""Delivery of a reply as an SSE stream (pacing arrives with the streaming issue)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from mockserver.catalog import speed_profile
from mockserver.clock import Clock
from mockserver.events import reply_events
from mockserver.replies import Reply
from mockserver.runtime import Runtime
from mockserver.settings import ModelEntry
from mockserver.sse import encode_event


def generation_seconds(reply: Reply, runtime: Runtime, model: ModelEntry) -> float:
    profile = speed_profile(model, reply.usage.speed).scaled(runtime.settings.timing.time_scale)
    return profile.ttft_seconds + reply.usage.output_tokens / profile.output_tokens_per_second


async def stream_reply(
    reply: Reply, message_id: str, runtime: Runtime, clock: Clock, model: ModelEntry
) -> AsyncIterator[bytes]:
    for event in reply_events(reply, message_id):
        yield encode_event(event)
