"""The planner: what the model "says" to a request, decided once, as data.

A `Reply` holds every output block as token pieces, the stop reason and the usage. The JSON body, the
SSE stream and batch results are all renderings of the same `Reply`, so they cannot disagree.
The content is seeded by the server seed and the request's content (not its speed: fast mode is
the same model with the same weights, so it says the same thing, only faster).
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
import xxhash

from mockserver.canned import CannedReplies, CannedReply
from mockserver.errors import InvalidRequestError
from mockserver.ids import seeded_tool_use_id
from mockserver.json_schema import Unanswerable, answer, unanswerable
from mockserver.rng import SeededRandom
from mockserver.tokens import split_tokens

Speed = Literal["standard", "fast"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]

_VOCABULARY = """
the model answer builds on your request with care and keeps each step small so that tests can
read it back exactly every reply here comes from a seeded generator which means the same
request gives the same words while speed changes only how fast they arrive fast mode runs the
same weights with a quicker inference path and reports its speed in usage a client should
handle rate limits by waiting for retry after or by sending the request again at standard speed
streaming shows tokens as they are produced and the final message matches what a plain request
returns tools receive inputs that follow their schema thinking blocks carry a signature that
clients send back unchanged
"""
_SPACED = tuple(" " + word for word in _VOCABULARY.split())
_TEXT_TOKENS = (24, 120)
_PREAMBLE_TOKENS = (6, 16)
_THINKING_TOKENS = (16, 96)


# Not frozen, like the other parts, Usage and Reply below: they are built for every request, and a
# frozen dataclass's __init__ costs 4x. Treat them as immutable.
@dataclass(slots=True)
class TextPart:
    pieces: tuple[str, ...]
    type: Literal["text"] = "text"

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def to_json(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(slots=True)
class ThinkingPart:
    pieces: tuple[str, ...]
    signature: str
    visible: bool = True  # display: "omitted" bills the thinking but returns it empty
    type: Literal["thinking"] = "thinking"

    @property
    def thinking(self) -> str:
        return "".join(self.pieces) if self.visible else ""

    def to_json(self) -> dict[str, Any]:
        return {"type": "thinking", "thinking": self.thinking, "signature": self.signature}


@dataclass(slots=True)
class ToolUsePart:
    id: str
    name: str
    input: dict[str, Any]
    pieces: tuple[str, ...]  # the JSON text of `input`, as streamed in input_json_delta fragments
    type: Literal["tool_use"] = "tool_use"

    def to_json(self) -> dict[str, Any]:
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}


Part = TextPart | ThinkingPart | ToolUsePart


@dataclass(slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    speed: Speed
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0
    service_tier: str = "standard"
    thinking_tokens: int = 0

    def to_json(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": self.service_tier,
            "speed": self.speed,
            "inference_geo": "not_available",
        }
        if self.thinking_tokens:
            body["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        return body


@dataclass(slots=True)
class Reply:
    model: str
    parts: tuple[Part, ...]
    stop_reason: StopReason
    stop_sequence: str | None
    usage: Usage
    diagnostics: dict[str, Any] | None = None  # cache-miss diagnosis, only when one was asked for

    def message(self, message_id: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        """The Message JSON; `usage` is `self.usage.to_json()` when the caller already has it."""
        # Key order as recorded from the real API.
        body = {
            "model": self.model,
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [part.to_json() for part in self.parts],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage.to_json() if usage is None else usage,
        }
        if self.diagnostics is not None:
            body["diagnostics"] = self.diagnostics
        return body

    def with_usage(self, **changes: Any) -> Reply:
        return replace(self, usage=replace(self.usage, **changes))


@dataclass(frozen=True)
class Planner:
    seed: int = 0
    canned: CannedReplies = field(default_factory=CannedReplies)

    def plan(self, raw: Mapping[str, Any], *, model: str, speed: Speed, input_tokens: int) -> Reply:
        rng = SeededRandom(self._seed_for(raw, model))
        budget = _Budget(int(raw["max_tokens"]))
        parts: list[Part] = []
        stop_reason: StopReason = "end_turn"
        stop_sequence = None
        thinking_tokens = 0

        thinking = raw.get("thinking") or {}
        if thinking.get("type") in ("enabled", "adaptive") and budget.left:
            cap = thinking.get("budget_tokens", _THINKING_TOKENS[1])
            pieces = budget.take(_sentences(rng, min(rng.randint(*_THINKING_TOKENS), cap)))
            digest = hashlib.sha256(("".join(pieces) + str(self.seed)).encode()).digest()
            signature = "Eo" + base64.b64encode(digest * 3).decode()
            parts.append(ThinkingPart(pieces, signature, thinking.get("display") != "omitted"))
            thinking_tokens = len(pieces)

        canned = self.canned.match(raw.get("messages", ()), model)
        tool = _tool_to_call(raw, canned)
        if canned is not None and canned.text is not None:
            text_pieces = split_tokens(canned.text)
        elif tool is not None and _forced(raw):
            text_pieces = []  # a forced tool call is prefilled by the API: no preamble
        elif (schema := _output_schema(raw)) is not None:
            text_pieces = split_tokens(orjson.dumps(_answer(schema, rng, OUTPUT_SCHEMA_FIELD)).decode())
        else:
            text_pieces = _sentences(rng, rng.randint(*(_PREAMBLE_TOKENS if tool else _TEXT_TOKENS)))

        stop_tokens = 0
        if text_pieces and (stops := raw.get("stop_sequences")):
            before, stop_sequence = _cut_at_stop_sequence(text_pieces, stops)
            if stop_sequence is not None:
                # The model generates the stop sequence's tokens too; they are billed but not shown.
                stop_tokens = max(1, len(split_tokens(stop_sequence)))
                if len(before) + stop_tokens <= budget.left:
                    text_pieces = before
                else:  # max_tokens comes first: the text runs on to the limit
                    stop_sequence = None
        if text_pieces:
            taken = budget.take(text_pieces)
            if taken:
                parts.append(TextPart(taken))
        if stop_sequence is not None:
            budget.spend(stop_tokens)
            stop_reason, tool = "stop_sequence", None
        if tool is not None and budget.left:
            name, schema, fixed_input, field = tool
            tool_input = fixed_input if fixed_input is not None else _answer(schema, rng, field)
            pieces = split_tokens(orjson.dumps(tool_input).decode())
            if budget.fits(pieces):
                parts.append(ToolUsePart(seeded_tool_use_id(rng), name, tool_input, budget.take(pieces)))
                stop_reason = "tool_use"
            else:
                budget.exhaust()
        if budget.truncated:
            stop_reason, stop_sequence = "max_tokens", None
        elif canned is not None and canned.stop_reason is not None and stop_reason == "end_turn":
            stop_reason = canned.stop_reason
        usage = Usage(input_tokens, budget.used, speed, thinking_tokens=thinking_tokens)
        return Reply(model, tuple(parts), stop_reason, stop_sequence, usage)

    def _seed_for(self, raw: Mapping[str, Any], model: str) -> int:
        content = {
            k: raw.get(k) for k in ("messages", "system", "tools", "tool_choice", "thinking", "output_config")
        }
        content["model"] = model
        data = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        # xxh3 digests a 50 KB prompt in ~3 µs (two CRC32s took 24); only stability matters here
        # (a collision would just make two requests say the same words).
        return xxhash.xxh3_64_intdigest(data, seed=self.seed & 0xFFFFFFFFFFFFFFFF)


class _Budget:
    """Output tokens left under `max_tokens`; thinking and tool input spend from the same pool."""

    def __init__(self, max_tokens: int) -> None:
        self.left = max_tokens
        self.used = 0
        self.truncated = False

    def fits(self, pieces: Sequence[str]) -> bool:
        return len(pieces) <= self.left

    def take(self, pieces: Sequence[str]) -> tuple[str, ...]:
        taken = tuple(pieces[: self.left])
        if len(taken) < len(pieces):
            self.truncated = True
        self.left -= len(taken)
        self.used += len(taken)
        return taken

    def spend(self, tokens: int) -> None:
        """Tokens generated but shown in no block (a matched stop sequence)."""
        self.left -= tokens
        self.used += tokens

    def exhaust(self) -> None:
        """The model wrote up to `max_tokens` of something that is dropped whole (a tool call whose
        input does not fit): the tokens were generated, so they are billed."""
        self.used += self.left
        self.left = 0
        self.truncated = True


def _sentences(rng: random.Random, tokens: int) -> list[str]:
    """`tokens` pieces of sentence-shaped text: a seeded window into a fixed corpus (slicing is far
    cheaper than drawing every word, and replies are on the hot path of every request)."""
    corpus, starts = _corpus()
    # randrange(n) is _randbelow(n) once its argument checks pass; n is a positive int here.
    start = rng._randbelow(len(corpus) - tokens) if tokens < len(corpus) else 0
    start = starts[bisect.bisect_right(starts, start) - 1]  # back to the sentence it falls in
    pieces = corpus[start : start + tokens]
    while len(pieces) < tokens:
        pieces += corpus[: tokens - len(pieces)]
    if pieces:
        pieces[0] = pieces[0].lstrip()
    return pieces


@functools.cache
def _corpus() -> tuple[list[str], list[int]]:
    """The pieces, and the index of each piece that begins a sentence (0 among them).

    Built on first use, not at import; callers only slice it (a slice is a copy)."""
    rng = random.Random(0x5EED)
    pieces: list[str] = []
    starts: list[int] = []
    while len(pieces) < 50_000:
        words = rng.choices(_SPACED, k=rng.randint(5, 14))
        starts.append(len(pieces))
        pieces.append(" " + words[0][1:].capitalize())
        pieces.extend(words[1:])
        pieces.append(".")
    return pieces, starts


def _cut_at_stop_sequence(pieces: list[str], stops: Sequence[str]) -> tuple[list[str], str | None]:
    text = "".join(pieces)
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return pieces, None
    at, stop = min(hits)
    return split_tokens(text[:at]), stop


def _forced(raw: Mapping[str, Any]) -> bool:
    return (raw.get("tool_choice") or {}).get("type") in ("any", "tool")


def _tool_to_call(raw: Mapping[str, Any], canned: CannedReply | None) -> tuple[str, Any, Any, str] | None:
    """(name, input schema, fixed input or None, the schema's field) of the tool to call; None for a
    text-only reply.

    `any`/`tool` force a call. Under `auto` the mock calls a tool when the last user turn names it
    (and is not itself a tool result), which lets tests drive a tool loop deterministically.
    """
    listed = raw.get("tools")
    if not listed:  # most requests: nothing to call, and no canned tool can be among the tools
        return None
    tools = {
        t["name"]: (t["input_schema"], f"tools.{i}.input_schema")
        for i, t in enumerate(listed)
        if "input_schema" in t
    }
    choice = raw.get("tool_choice") or {"type": "auto"}
    if canned is not None and canned.tool_name in tools:
        schema, field = tools[canned.tool_name]
        return canned.tool_name, schema, canned.tool_input, field
    if not tools or choice["type"] == "none":
        return None
    if choice["type"] == "tool":
        return (choice["name"], *_unfixed(tools[choice["name"]])) if choice["name"] in tools else None
    if choice["type"] == "any":
        name = next(iter(tools))
        return name, *_unfixed(tools[name])
    last = _last_user_text(raw.get("messages") or ())
    if last is None:
        return None
    for name, described in tools.items():
        if name in last:
            return name, *_unfixed(described)
    return None


def _unfixed(described: tuple[Any, str]) -> tuple[Any, None, str]:
    schema, field = described
    return schema, None, field


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        if any(block.get("type") == "tool_result" for block in content):
            return None
        return " ".join(block.get("text", "") for block in content if block.get("type") == "text")
    return None


OUTPUT_SCHEMA_FIELD = "output_config.format.schema"


def _answer(schema: Any, rng: random.Random, field: str) -> Any:
    try:
        return answer(schema, rng)
    except Unanswerable as exc:
        raise InvalidRequestError(f"{field}: {exc}") from None


def check_answerable(raw: Mapping[str, Any]) -> None:
    """Raise the 400 planning `raw` would raise for a schema the mock cannot answer (what a batch
    request meets "during processing"). Canned replies are not consulted: a canned tool input
    would have spared the schema."""
    tool = _tool_to_call(raw, None)
    if tool is not None and (problem := unanswerable(tool[1])) is not None:
        raise InvalidRequestError(f"{tool[3]}: {problem}")
    schema = None if tool is not None and _forced(raw) else _output_schema(raw)
    if schema is not None and (problem := unanswerable(schema)) is not None:
        raise InvalidRequestError(f"{OUTPUT_SCHEMA_FIELD}: {problem}")


def _output_schema(raw: Mapping[str, Any]) -> Any:
    fmt = (raw.get("output_config") or {}).get("format") or {}
    return fmt.get("schema") if fmt.get("type") == "json_schema" else None
