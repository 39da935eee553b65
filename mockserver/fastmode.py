"""Fast-mode rules: which model a request names, and whether it may run at the speed it asks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mockserver.catalog import FAST_MODE_BETA, Catalog
from mockserver.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from mockserver.settings import ModelEntry

Speed = Literal["standard", "fast"]


# Not frozen: built for every request, and a frozen __init__ costs 4x. Treat as immutable.
@dataclass(slots=True)
class Route:
    model: ModelEntry
    speed: Speed


def route(
    catalog: Catalog,
    model_name: str,
    speed: Speed | None,
    betas: frozenset[str],
    *,
    fast_allowed: bool = True,
) -> Route:
    """The model and speed that serve a request; raises the API's error when there are none."""
    entry = catalog.resolve(model_name)
    if entry is None or entry.lifecycle == "retired":
        raise NotFoundError(f"model: {model_name}")
    if speed == "fast" and "fast" not in entry.speeds:
        fast_models = [m.id for m in catalog.newest_first() if "fast" in m.speeds]
        where = f"; it is available on {', '.join(fast_models)}" if fast_models else ""
        raise InvalidRequestError(
            f'speed: model {model_name} does not support speed "fast" (fast mode){where}'
        )
    if speed is not None and entry.speed_requires_beta and FAST_MODE_BETA not in betas:
        raise InvalidRequestError(
            f"speed: model {model_name} requires the `anthropic-beta: {FAST_MODE_BETA}` header "
            "to set `speed`; add that header or remove `speed`"
        )
    if speed == "fast" and not fast_allowed:
        raise PermissionDeniedError(
            "Your organization does not have access to fast mode (research preview). Join the waitlist "
            "to request access, or send the request without `speed`."
        )
    return Route(model=entry, speed=speed or "standard")
