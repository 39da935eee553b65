"""The Anthropic stream event sequence as data, one `Event` per SSE message (names live here only).

Every delta carries the number of output tokens it delivers, so the pacer can time it and the
limiter can be told how many tokens a stream produced before its client went away.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mockserver.replies import Reply, TextPart, ThinkingPart, ToolUsePart

MESSAGE_START = "message_start"
CONTENT_BLOCK_START = "content_block_start"
CONTENT_BLOCK_DELTA = "content_block_delta"
CONTENT_BLOCK_STOP = "content_block_stop"
MESSAGE_DELTA = "message_delta"
MESSAGE_STOP = "message_stop"
PING = "ping"
ERROR = "error"

# The field of each delta type that holds its growing text; deltas of one type can be merged.
_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: dict[str, Any]
    tokens: int = 0

    def mergeable_with(self, other: Event) -> bool:
        if self.name != CONTENT_BLOCK_DELTA or other.name != CONTENT_BLOCK_DELTA:
            return False
        return (
            self.data["index"] == other.data["index"]
            and self.delta_type == other.delta_type
            and (self.delta_type in _DELTA_TEXT)
        )

    @property
    def delta_type(self) -> str | None:
        return self.data["delta"]["type"] if self.name == CONTENT_BLOCK_DELTA else None

    def merged(self, other: Event) -> Event:
        field = _DELTA_TEXT[self.data["delta"]["type"]]
        delta = {
            "type": self.data["delta"]["type"],
            field: self.data["delta"][field] + other.data["delta"][field],
        }
        data = {"type": CONTENT_BLOCK_DELTA, "index": self.data["index"], "delta": delta}
        return Event(CONTENT_BLOCK_DELTA, data, self.tokens + other.tokens)


def merge_deltas(run: Sequence[Event]) -> Event:
    """One delta carrying a run of mergeable deltas (`mergeable_with` each other), joined in one pass.

    Joining once instead of folding `merged` keeps a long catch-up run linear in its length.
    """
    first = run[0]
    if len(run) == 1:
        return first
    kind = first.data["delta"]["type"]
    field = _DELTA_TEXT[kind]
    delta = {"type": kind, field: "".join(event.data["delta"][field] for event in run)}
    data = {"type": CONTENT_BLOCK_DELTA, "index": first.data["index"], "delta": delta}
    return Event(CONTENT_BLOCK_DELTA, data, sum(event.tokens for event in run))


PING_EVENT = Event(PING, {"type": PING})


def message_start(reply: Reply, message_id: str) -> Event:
    message = reply.message(message_id)
    message["content"] = []
    message["stop_reason"] = None
    message["stop_sequence"] = None
    # The API's placeholder is 1; never more than the final count, which a client reads as cumulative.
    message["usage"] = reply.usage.to_json(output_tokens=min(1, reply.usage.output_tokens))
    return Event(MESSAGE_START, {"type": MESSAGE_START, "message": message})


def reply_events(reply: Reply, message_id: str) -> Iterator[Event]:
    """The whole stream for a reply: one token per delta (the pacer merges them as timing allows)."""
    yield message_start(reply, message_id)
    for index, part in enumerate(reply.parts):
        yield _block_start(index, part)
        if index == 0:
            yield PING_EVENT  # the real API sends one ping right after the first block starts
        yield from _block_deltas(index, part)
        yield Event(CONTENT_BLOCK_STOP, {"type": CONTENT_BLOCK_STOP, "index": index})
    # Tokens generated but in no block (a matched stop sequence) arrive with the message_delta, so the
    # stream is paced for them and a client that stays to the end is counted as having received them.
    unshown = reply.usage.output_tokens - sum(len(part.pieces) for part in reply.parts)
    yield message_delta(reply, reply.usage.output_tokens, tokens=max(0, unshown))
    yield Event(MESSAGE_STOP, {"type": MESSAGE_STOP})


def message_delta(
    reply: Reply, output_tokens: int, *, stop_reason: str | None = None, tokens: int = 0
) -> Event:
    usage: dict[str, Any] = {
        "input_tokens": reply.usage.input_tokens,
        "cache_creation_input_tokens": reply.usage.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.usage.cache_read_input_tokens,
        "output_tokens": output_tokens,
    }
    if reply.usage.thinking_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": reply.usage.thinking_tokens}
    delta = {"stop_reason": stop_reason or reply.stop_reason, "stop_sequence": reply.stop_sequence}
    return Event(MESSAGE_DELTA, {"type": MESSAGE_DELTA, "delta": delta, "usage": usage}, tokens)


def error_event(error_type: str, message: str) -> Event:
    return Event(ERROR, {"type": ERROR, "error": {"type": error_type, "message": message}})


def _block_start(index: int, part: TextPart | ThinkingPart | ToolUsePart) -> Event:
    if isinstance(part, TextPart):
        block: dict[str, Any] = {"type": "text", "text": ""}
    elif isinstance(part, ThinkingPart):
        block = {"type": "thinking", "thinking": "", "signature": ""}
    else:
        block = {"type": "tool_use", "id": part.id, "name": part.name, "input": {}}
    return Event(CONTENT_BLOCK_START, {"type": CONTENT_BLOCK_START, "index": index, "content_block": block})


def _block_deltas(index: int, part: TextPart | ThinkingPart | ToolUsePart) -> Iterator[Event]:
    def delta(body: dict[str, Any], tokens: int) -> Event:
        return Event(
            CONTENT_BLOCK_DELTA, {"type": CONTENT_BLOCK_DELTA, "index": index, "delta": body}, tokens
        )

    if isinstance(part, TextPart):
        for piece in part.pieces:
            yield delta({"type": "text_delta", "text": piece}, 1)
    elif isinstance(part, ToolUsePart):
        yield delta({"type": "input_json_delta", "partial_json": ""}, 0)
        for piece in part.pieces:
            yield delta({"type": "input_json_delta", "partial_json": piece}, 1)
    else:
        hidden = 0
        for piece in part.pieces:
            if part.visible:
                yield delta({"type": "thinking_delta", "thinking": piece}, 1)
            else:
                hidden += 1
        yield delta({"type": "signature_delta", "signature": part.signature}, hidden)
