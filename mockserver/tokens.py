"""Token counting: every token count in mockserver comes from here.

Input: a text counts ceil(UTF-8 bytes / 4) tokens (about right for English), plus fixed costs for
structure. It is the same function for `count_tokens`, `usage.input_tokens`, the prompt cache and
the rate limiter, so they always agree; and it is O(1) on ASCII text, because a 10k-token prompt
must not cost more than the HTTP round trip (a regex tokenizer took ~2 ms on one).

Output: the planner generates text as pieces (a word with its leading space, a punctuation mark,
a run of whitespace); each piece is one output token, and a stream sends exactly those pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

_PIECE = re.compile(r" ?[A-Za-z]{1,10}| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]|\s+")

# Fixed costs for structure the text alone does not show (role markers, tool wrappers, pixels).
MESSAGE_OVERHEAD = 3
SYSTEM_OVERHEAD = 3
TOOL_OVERHEAD = 10
REQUEST_OVERHEAD = 1
IMAGE_TOKENS = 1_000
DOCUMENT_TOKENS = 1_500


def split_tokens(text: str) -> list[str]:
    return _PIECE.findall(text)


def count_text(text: str) -> int:
    size = len(text) if text.isascii() else len(text.encode())
    return (size + 3) // 4


def count_json(value: Any) -> int:
    return (len(orjson.dumps(value)) + 3) // 4


def count_input(
    *,
    messages: Iterable[Mapping[str, Any]],
    system: str | Iterable[Mapping[str, Any]] | None = None,
    tools: Iterable[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of a (validated) request body, as both `usage` and `count_tokens` report them."""
    total = REQUEST_OVERHEAD
    if system:
        total += SYSTEM_OVERHEAD + (count_text(system) if isinstance(system, str) else _blocks(system))
    for tool in tools or ():
        total += TOOL_OVERHEAD + count_json(tool)
    for message in messages:
        content = message["content"]
        total += MESSAGE_OVERHEAD + (count_text(content) if isinstance(content, str) else _blocks(content))
    return total


def _blocks(blocks: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            total += count_text(block["text"])
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' thinking is stripped before it reaches the model
        elif kind == "image":
            total += IMAGE_TOKENS
        elif kind == "document":
            source = block.get("source") or {}
            total += count_text(source["data"]) if source.get("type") == "text" else DOCUMENT_TOKENS
        elif kind == "tool_result":
            content = block.get("content")
            if isinstance(content, str):
                total += count_text(content)
            elif content:
                total += _blocks(content)
            total += 2
        else:
            total += count_json({k: v for k, v in block.items() if k != "cache_control"})
    return total
