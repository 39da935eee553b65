"""Faults as data (after toxiproxy's toxics): a kind, the requests it targets, when it fires, and the
attributes of its kind. Firing decisions are pure functions of the fault, the request, how many
matching requests the fault has seen, the server seed and the time, so the same seed and the same
request sequence fire the same faults.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Kinds that act on the HTTP exchange before any byte of the reply ...
HTTP_KINDS = ("http_error", "latency", "reset", "fast_outage", "degrade_speed")
# ... and kinds that act inside an SSE stream.
STREAM_KINDS = ("stall", "stream_error", "stream_reset", "truncate", "malformed")

Kind = Literal[
    "http_error",
    "latency",
    "reset",
    "fast_outage",
    "degrade_speed",
    "stall",
    "stream_error",
    "stream_reset",
    "truncate",
    "malformed",
]

# A day: a wait beyond it tests no client, and 1e308 made a 309-digit retry-after header.
MAX_RETRY_AFTER = 86_400.0
MAX_RETRY_AFTER_MS = MAX_RETRY_AFTER * 1000


class Fault(BaseModel):
    # Finite numbers only: "inf" (a string pydantic reads as a float) made a retry-after header of
    # math.ceil(inf), a 500 on every request the fault hit, and a stored fault reads inf back as null.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Kind
    # Targets: a request matches when every given filter matches.
    path: str = "/v1/messages"  # prefix of the request path
    model: str | None = None
    speed: Literal["standard", "fast"] | None = None
    organization: str | None = None
    stream: bool | None = None
    # Trigger: at most one; none means every matching request.
    probability: float | None = Field(default=None, ge=0, le=1)
    count: int | None = Field(default=None, gt=0)  # the next N matching requests
    every: int | None = Field(default=None, gt=0)  # every Nth matching request
    start_at: float | None = None  # a window in epoch seconds on the server clock
    end_at: float | None = None
    # Attributes of the kinds.
    status: int = Field(default=529, ge=400, le=599)
    error_type: str | None = None
    message: str | None = None
    # Sent as headers: finite (math.ceil of infinity was a 500, "inf" a header no client reads).
    retry_after: float | None = Field(default=None, ge=0, le=MAX_RETRY_AFTER, allow_inf_nan=False)
    retry_after_ms: float | None = Field(default=None, ge=0, le=MAX_RETRY_AFTER_MS, allow_inf_nan=False)
    should_retry: bool | None = None
    latency_seconds: float = Field(default=1.0, ge=0, le=3600)
    latency_distribution: Literal["fixed", "uniform", "exponential"] = "fixed"
    after_tokens: int = Field(default=10, ge=0)  # stream kinds: how far into the reply
    stall_seconds: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("end_at")
    @classmethod
    def _window_not_empty(cls, end_at: float | None, info: ValidationInfo) -> float | None:
        # [start_at, end_at) with end_at <= start_at holds no instant: the fault could never fire.
        start_at = info.data.get("start_at")
        if end_at is not None and start_at is not None and end_at <= start_at:
            raise ValueError(f"must be later than start_at ({start_at}); the window would be empty")
        return end_at

    @model_validator(mode="after")
    def _one_trigger(self) -> Fault:
        # `is not None`, not truthiness: start_at 0 (the epoch) is a window like any other.
        window = self.start_at is not None or self.end_at is not None
        triggers = [self.probability is not None, self.count is not None, self.every is not None, window]
        if sum(triggers) > 1:
            raise ValueError("give at most one trigger: probability, count, every, or start_at/end_at")
        if self.kind == "fast_outage" and self.speed == "standard":
            raise ValueError("a fast_outage only affects fast requests; drop speed or set it to 'fast'")
        return self

    @property
    def counted(self) -> bool:
        """Whether firing depends on how many matching requests came before (kept in the store)."""
        return self.count is not None or self.every is not None or self.probability is not None


@dataclass(frozen=True, slots=True)
class Target:
    """What a fault can see of a request."""

    path: str
    model: str | None
    speed: str | None
    organization: str | None
    stream: bool


def matches(fault: Fault, target: Target) -> bool:
    if not target.path.startswith(fault.path):
        return False
    speed = "fast" if fault.kind == "fast_outage" else fault.speed
    checks = ((fault.model, target.model), (speed, target.speed), (fault.organization, target.organization))
    if any(wanted is not None and wanted != actual for wanted, actual in checks):
        return False
    if fault.kind in STREAM_KINDS and not target.stream:
        return False
    return fault.stream is None or fault.stream == target.stream


def fires(fault: Fault, seen: int, *, seed: int, now: float) -> bool:
    """Whether the fault fires for its `seen`-th matching request (counting from 1)."""
    if fault.count is not None:
        return seen <= fault.count
    if fault.every is not None:
        return seen % fault.every == 0
    if fault.probability is not None:
        return unit_draw(seed, fault.name, seen) < fault.probability
    if fault.start_at is not None and now < fault.start_at:
        return False
    return not (fault.end_at is not None and now >= fault.end_at)


def unit_draw(seed: int, name: str, n: int) -> float:
    """A reproducible number in [0, 1) for the n-th decision of one fault."""
    digest = hashlib.sha256(f"{seed}:{name}:{n}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def latency(fault: Fault, seed: int, n: int) -> float:
    if fault.latency_distribution == "uniform":
        return fault.latency_seconds * 2 * unit_draw(seed, fault.name + "/latency", n)
    if fault.latency_distribution == "exponential":
        import math

        return -fault.latency_seconds * math.log(1.0 - unit_draw(seed, fault.name + "/latency", n))
    return fault.latency_seconds
