"""Canned replies: fixed answers for chosen prompts, read from TOML files (see `fixtures/replies/`).

    [[replies]]
    contains = "weather"            # or: equals = "...", or: regex = "..."
    model = "claude-opus-4-7"       # optional: only for this model
    text = "It is sunny."           # optional text block
    tool = "get_weather"            # optional: call this tool (must be among the request's tools)
    input = { city = "Paris" }      # optional: the tool input (else generated from its schema)
    stop_reason = "refusal"         # optional: override end_turn

Matching looks at the text of the last user message; the first matching entry wins.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mockserver.errors import ConfigError

_STOP_REASONS = {"end_turn", "refusal", "max_tokens", "stop_sequence", "tool_use"}
_KEYS = {"equals", "contains", "regex", "model", "text", "tool", "input", "stop_reason"}


@dataclass(frozen=True, slots=True)
class CannedReply:
    pattern: re.Pattern[str]
    model: str | None = None
    text: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    stop_reason: Any = None


@dataclass(frozen=True)
class CannedReplies:
    entries: tuple[CannedReply, ...] = ()

    @classmethod
    def load(cls, paths: Iterable[str]) -> CannedReplies:
        entries: list[CannedReply] = []
        for path in paths:
            root = Path(path)
            if not root.exists():
                raise ConfigError(f"setting 'replies': {path} does not exist")
            files = sorted(root.glob("*.toml")) if root.is_dir() else [root]
            for file in files:
                entries.extend(_read(file))
        return cls(tuple(entries))

    def match(self, messages: Sequence[Mapping[str, Any]], model: str) -> CannedReply | None:
        if not self.entries:
            return None
        text = _last_user_text(messages)
        for entry in self.entries:
            if (entry.model is None or entry.model == model) and entry.pattern.search(text):
                return entry
        return None


def _read(file: Path) -> list[CannedReply]:
    try:
        rows = tomllib.loads(file.read_text())["replies"]
    except (tomllib.TOMLDecodeError, KeyError, OSError) as exc:
        raise ConfigError(
            f"canned replies {file}: expected a TOML file with [[replies]] tables ({exc})"
        ) from None
    return [_entry(file, i, row) for i, row in enumerate(rows)]


def _entry(file: Path, index: int, row: Mapping[str, Any]) -> CannedReply:
    where = f"canned replies {file}, entry {index}"
    unknown = set(row) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    matchers = [k for k in ("equals", "contains", "regex") if k in row]
    if len(matchers) != 1:
        raise ConfigError(f"{where}: give exactly one of equals, contains, regex")
    kind = matchers[0]
    try:
        pattern = {
            "equals": lambda v: re.compile("^" + re.escape(v) + r"\Z"),
            "contains": lambda v: re.compile(re.escape(v)),
            "regex": re.compile,
        }[kind](row[kind])
    except re.error as exc:
        raise ConfigError(f"{where}: bad regex: {exc}") from None
    if "text" not in row and "tool" not in row:
        raise ConfigError(f"{where}: give text, tool, or both")
    if row.get("stop_reason") is not None and row["stop_reason"] not in _STOP_REASONS:
        raise ConfigError(f"{where}: stop_reason must be one of {', '.join(sorted(_STOP_REASONS))}")
    return CannedReply(
        pattern=pattern,
        model=row.get("model"),
        text=row.get("text"),
        tool_name=row.get("tool"),
        tool_input=row.get("input"),
        stop_reason=row.get("stop_reason"),
    )


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(b.get("text", "") for b in content or () if b.get("type") == "text")
    return ""
