"""Everything a request needs, derived once from `Settings` and swapped whole when settings change.

Handlers read `state.runtime` once at the start of a request, so a settings change (admin API)
never shows a request half old and half new values.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from mockserver.canned import CannedReplies
from mockserver.catalog import Catalog
from mockserver.clock import Clock, SystemClock
from mockserver.replies import Planner
from mockserver.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    catalog: Catalog
    planner: Planner
    known_betas: frozenset[str] | None  # None: any beta name is accepted

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        known = None
        if settings.betas.reject_unknown:
            known = default_betas() | frozenset(settings.betas.extra)
        return cls(
            settings=settings,
            catalog=Catalog.from_settings(settings),
            planner=Planner(seed=settings.seed, canned=CannedReplies.load(settings.replies)),
            known_betas=known,
        )


class ServerState:
    """The mutable part of a running server: the current runtime and the injected collaborators."""

    def __init__(self, runtime: Runtime, *, clock: Clock | None = None) -> None:
        self.runtime = runtime
        self.clock: Clock = clock or SystemClock()


_BETAS: frozenset[str] | None = None


def default_betas() -> frozenset[str]:
    global _BETAS
    if _BETAS is None:
        raw = resources.files("mockserver.defaults").joinpath("betas.toml").read_text()
        _BETAS = frozenset(tomllib.loads(raw)["known"])
    return _BETAS
