"""Prompt-cache emulation: `cache_control` breakpoints, entries keyed by organisation, model, speed
and the exact prefix, 5-minute and 1-hour lifetimes refreshed on a hit, and cache-miss diagnostics.

The prefix runs tools → system → messages (reference §4.4). Speed is part of the key because the
real API does not share cached prefixes between speeds: falling back from fast to standard is a miss.
Entries carry their own deadline, read against the server's clock, so a fake clock expires them on
every store backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from mockserver.state import StateStore
from mockserver.tokens import count_input

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
FINGERPRINT_TTL = 3600.0
_GC_MARGIN = 60.0


@dataclass(frozen=True, slots=True)
class Breakpoint:
    digest: str  # of everything up to and including the marked block
    tokens: int  # input tokens of that prefix, by the one tokenizer
    ttl: str


@dataclass
class CacheOutcome:
    read_tokens: int = 0
    created_5m: int = 0
    created_1h: int = 0
    writes: list[tuple[str, Breakpoint]] = field(default_factory=list)  # (entry key, breakpoint)
    fingerprint: dict[str, Any] | None = None

    @property
    def created_tokens(self) -> int:
        return self.created_5m + self.created_1h


class PromptCache:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    @staticmethod
    def applies(raw: Mapping[str, Any]) -> bool:
        """Does this request read or write the cache, or ask for a diagnosis? Most do not."""
        return has_breakpoints(raw) or bool(raw.get("diagnostics"))

    async def lookup(
        self, raw: Mapping[str, Any], *, org: str, model: str, speed: str, now: float, min_tokens: int
    ) -> CacheOutcome:
        """What this request would read and write; nothing is written until `commit`."""
        if not self.applies(raw):
            return CacheOutcome()  # the common case, kept cheap: no digests of a large prompt
        points = [p for p in breakpoints(raw) if p.tokens >= min_tokens]
        outcome = CacheOutcome(fingerprint=fingerprint(raw, model, speed, points))
        if not points:
            return outcome
        keys = [_entry_key(org, model, speed, p.digest) for p in points]
        entries = await self._store.get_many(keys)
        hit = -1
        for index, entry in enumerate(entries):
            if entry is not None and entry["expires_at"] > now:
                hit = index
        if hit >= 0:
            outcome.read_tokens = points[hit].tokens
            outcome.writes.append((keys[hit], points[hit]))  # a hit refreshes the entry's lifetime
        covered = outcome.read_tokens
        for key, point in zip(keys[hit + 1 :], points[hit + 1 :], strict=True):
            fresh = max(0, point.tokens - covered)
            covered = max(covered, point.tokens)
            if point.ttl == "1h":
                outcome.created_1h += fresh
            else:
                outcome.created_5m += fresh
            outcome.writes.append((key, point))
        return outcome

    async def commit(self, outcome: CacheOutcome, *, now: float, message_id: str) -> None:
        for key, point in outcome.writes:
            ttl = TTL_SECONDS[point.ttl]
            await self._store.put(
                key, {"expires_at": now + ttl, "tokens": point.tokens}, ttl=ttl + _GC_MARGIN
            )
        if outcome.fingerprint is not None and outcome.writes:
            await self._store.put(_fingerprint_key(message_id), outcome.fingerprint, ttl=FINGERPRINT_TTL)

    async def diagnose(self, previous_message_id: str, current: Mapping[str, Any]) -> dict[str, Any] | None:
        """The `diagnostics` object for a request that named an earlier message, or None when the
        prefixes agree (the API then sends no diagnosis)."""
        previous = await self._store.get(_fingerprint_key(previous_message_id))
        if previous is None:
            return {"cache_miss_reason": {"type": "previous_message_not_found"}}
        missed = previous["cacheable_tokens"]
        for part, reason in (
            ("model", "model_changed"),
            ("tools", "tools_changed"),
            ("system", "system_changed"),
        ):
            if previous[part] != current[part]:
                return {"cache_miss_reason": {"type": reason, "cache_missed_input_tokens": missed}}
        earlier = previous["messages"]
        if current["messages"][: len(earlier)] != earlier:
            return {"cache_miss_reason": {"type": "messages_changed", "cache_missed_input_tokens": missed}}
        return None


def has_breakpoints(raw: Mapping[str, Any]) -> bool:
    if raw.get("cache_control"):
        return True
    system = raw.get("system")
    blocks = [*(raw.get("tools") or ()), *(system if isinstance(system, list) else ())]
    for message in raw.get("messages") or ():
        if isinstance(message["content"], list):
            blocks.extend(message["content"])
    return any(_marked(block) for block in blocks)


def breakpoints(raw: Mapping[str, Any]) -> list[Breakpoint]:
    """Every `cache_control` marker in prefix order, with the digest and token count of its prefix."""
    tools = list(raw.get("tools") or ())
    system = raw.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or ())
    messages = list(raw.get("messages") or ())
    # (where, block) in prefix order; `where` rebuilds the request prefix that ends at this block.
    segments: list[tuple[tuple[str, int, int], Mapping[str, Any]]] = []
    segments += [(("tools", i, 0), tool) for i, tool in enumerate(tools)]
    segments += [(("system", i, 0), block) for i, block in enumerate(system_blocks)]
    for i, message in enumerate(messages):
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        segments += [(("messages", i, j), block) for j, block in enumerate(blocks)]
    marks = [
        (n, seg[1]["cache_control"].get("ttl") or "5m") for n, seg in enumerate(segments) if _marked(seg[1])
    ]
    top = raw.get("cache_control")
    if top and segments and (not marks or marks[-1][0] != len(segments) - 1):
        marks.append((len(segments) - 1, top.get("ttl") or "5m"))  # top level marks the last block
    points = []
    digest = hashlib.sha256()
    done = 0
    for index, ttl in marks:
        for where, block in segments[done : index + 1]:
            digest.update(where[0].encode() + orjson.dumps(_unmarked(block)))
        done = index + 1
        prefix = _prefix_request(segments[index][0], tools, system_blocks, messages)
        points.append(Breakpoint(digest.copy().hexdigest()[:32], count_input(**prefix), ttl))
    return points


def fingerprint(
    raw: Mapping[str, Any], model: str, speed: str, points: Sequence[Breakpoint]
) -> dict[str, Any]:
    return {
        "model": f"{model}/{speed}",
        "tools": _digest(raw.get("tools")),
        "system": _digest(raw.get("system")),
        "messages": [_digest(_unmarked_message(m)) for m in raw.get("messages") or ()],
        "cacheable_tokens": points[-1].tokens if points else 0,
    }


def _prefix_request(
    where: tuple[str, int, int], tools: list[Any], system: list[Any], messages: list[Any]
) -> dict[str, Any]:
    part, i, j = where
    if part == "tools":
        return {"tools": tools[: i + 1], "messages": []}
    if part == "system":
        return {"tools": tools, "system": system[: i + 1], "messages": []}
    content = messages[i]["content"]
    last = {**messages[i], "content": content if isinstance(content, str) else content[: j + 1]}
    return {"tools": tools, "system": system, "messages": [*messages[:i], last]}


def _marked(block: Any) -> bool:
    return isinstance(block, Mapping) and bool(block.get("cache_control"))


def _unmarked(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _unmarked_message(message: Mapping[str, Any]) -> Any:
    content = message["content"]
    if isinstance(content, str):
        return [message["role"], content]
    return [message["role"], [_unmarked(b) for b in content]]


def _digest(value: Any) -> str:
    if isinstance(value, list):
        value = [_unmarked(v) if isinstance(v, Mapping) else v for v in value]
    return hashlib.sha256(orjson.dumps(value)).hexdigest()[:32]


def _entry_key(org: str, model: str, speed: str, digest: str) -> str:
    return f"cache:{org}:{model}:{speed}:{digest}"


def _fingerprint_key(message_id: str) -> str:
    return f"cachefp:{message_id}"
