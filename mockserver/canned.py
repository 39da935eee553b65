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

import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mockserver.errors import ConfigError

_STOP_REASONS = {"end_turn", "refusal", "max_tokens", "stop_sequence", "tool_use"}
_KEYS = {"equals", "contains", "regex", "model", "text", "tool", "input", "stop_reason"}
_STRINGS = ("equals", "contains", "regex", "model", "text", "tool", "stop_reason")


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
        """Reads files: call it off the event loop (`asyncio.to_thread`) once a server is running.
        Only regular files are read (a FIFO or a device would block or never end); anything else,
        like a file that is not UTF-8 TOML, is a ConfigError naming the path."""
        entries: list[CannedReply] = []
        for path in paths:
            for file in _files(path):
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


def _files(path: str) -> list[Path]:
    """The replies file `path`, or the TOML files in the directory `path`."""
    root = Path(path)
    try:
        if not root.exists():
            raise ConfigError(f"setting 'replies': {path} does not exist")
        return sorted(root.glob("*.toml")) if root.is_dir() else [root]
    except OSError as exc:  # a name too long for the file system, a directory we may not list...
        raise ConfigError(f"setting 'replies': {path} cannot be read ({exc.strerror})") from None


def _read(file: Path) -> list[CannedReply]:
    expected = f"canned replies {file}: expected a UTF-8 TOML file with [[replies]] tables"
    try:
        rows = tomllib.loads(_regular_file_text(file))["replies"]
    except (tomllib.TOMLDecodeError, KeyError, OSError) as exc:
        raise ConfigError(f"{expected} ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{expected} (byte {exc.start} is not UTF-8: {exc.reason})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ConfigError(f"{expected} (replies is not an array of tables)")
    return [_entry(file, i, row) for i, row in enumerate(rows)]


def _regular_file_text(file: Path) -> str:
    # Opened without blocking and checked on the open descriptor, so nothing swapped in after a check
    # by name can hang the reader: opening a FIFO for reading would wait for a writer.
    with os.fdopen(os.open(file, os.O_RDONLY | os.O_NONBLOCK), "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ConfigError(f"canned replies {file}: not a regular file (a FIFO, a device, a socket?)")
        return stream.read().decode("utf-8")


def _entry(file: Path, index: int, row: Mapping[str, Any]) -> CannedReply:
    where = f"canned replies {file}, entry {index}"
    unknown = set(row) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    matchers = [k for k in ("equals", "contains", "regex") if k in row]
    if len(matchers) != 1:
        raise ConfigError(f"{where}: give exactly one of equals, contains, regex")
    kind = matchers[0]
    wrong = [key for key in _STRINGS if key in row and not isinstance(row[key], str)]
    if wrong:
        raise ConfigError(f"{where}: {wrong[0]} must be a string")
    if "input" in row and not isinstance(row["input"], dict):
        raise ConfigError(f"{where}: input must be a table")
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
