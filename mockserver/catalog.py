"""The model table: which models exist, what they answer to, and how fast and at which speeds.

The default rows are data (`mockserver/defaults/models.toml`, shipped inside the package so a wheel
or a container has them); a user's config extends or replaces them.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from mockserver.settings import ModelEntry, Settings

Speed = Literal["standard", "fast"]
FAST_MODE_BETA = "fast-mode-2026-02-01"


@dataclass(frozen=True, slots=True)
class SpeedProfile:
    ttft_seconds: float
    output_tokens_per_second: float

    def scaled(self, time_scale: float) -> SpeedProfile:
        return SpeedProfile(self.ttft_seconds / time_scale, self.output_tokens_per_second * time_scale)


class Catalog:
    def __init__(self, entries: Iterable[ModelEntry]) -> None:
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            self._entries[entry.id] = entry  # later rows override earlier ones with the same id
        self._by_name: dict[str, ModelEntry] = {}
        for entry in self._entries.values():
            for alias in entry.aliases:
                self._by_name[alias] = entry
        for entry in self._entries.values():
            self._by_name[entry.id] = entry

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        base = () if settings.models_mode == "replace" else default_entries()
        return cls((*base, *settings.models))

    def resolve(self, name: str) -> ModelEntry | None:
        """The model a request's `model` names (id or alias), or None if there is none."""
        return self._by_name.get(name)

    def newest_first(self) -> list[ModelEntry]:
        # The real list is newest first; ties keep the table's order, which is the SDK's.
        order = {entry.id: index for index, entry in enumerate(self._entries.values())}
        return sorted(self._entries.values(), key=lambda e: (e.created_at, -order[e.id]), reverse=True)

    def __len__(self) -> int:
        return len(self._entries)


def speed_profile(entry: ModelEntry, speed: Speed) -> SpeedProfile:
    # Same time to first token at both speeds: fast mode speeds up output only (the seed).
    otps = entry.output_tokens_per_second * (entry.fast_multiplier if speed == "fast" else 1.0)
    return SpeedProfile(entry.ttft_seconds, otps)


def model_class(entry: ModelEntry) -> str:
    """The rate-limit family a model belongs to; limits are per model class on the real API."""
    return entry.line or entry.id


def model_info(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "type": "model",
        "display_name": entry.display_name,
        "created_at": entry.created_at,
        "lifecycle": entry.lifecycle,
        "deprecated_at": entry.deprecated_at,
        "retires_at": entry.retires_at,
        "line": entry.line,
        "max_input_tokens": entry.max_input_tokens,
        "max_tokens": entry.max_tokens,
        "capabilities": _capabilities(),
    }


def _capabilities() -> dict[str, Any]:
    yes = {"supported": True}
    return {
        "batch": yes,
        "citations": yes,
        "code_execution": yes,
        "image_input": yes,
        "pdf_input": yes,
        "structured_outputs": yes,
        "context_management": {"supported": False},
        "effort": {"supported": True, "low": yes, "medium": yes, "high": yes, "max": yes},
        "thinking": {
            "supported": True,
            "types": {
                "adaptive": yes,
                "between_tools": {"supported": False},
                "disabled": yes,
                "enabled": yes,
            },
        },
        "server_tools": {
            "supported": False,
            "code_execution": {"supported": False},
            "web_search": {"supported": False},
        },
    }


@functools.cache
def default_entries() -> tuple[ModelEntry, ...]:
    raw = resources.files("mockserver.defaults").joinpath("models.toml").read_bytes()
    return tuple(ModelEntry.model_validate(row) for row in tomllib.loads(raw.decode())["models"])
