"""The usage ledger behind `GET /_admin/usage`: tokens and cost per organisation, model and speed.

A row's cost is null when it is unknown: a cost that overflowed to inf before prices were bounded was
stored that way (JSON has no inf), and a Redis ledger outlives the server that wrote it. Such a row
still counts as a request with its tokens, adds nothing to `cost_usd`, and is counted in its group's
`unknown_cost_requests`, so a report says its cost is short instead of failing (it was a 500 until a
reset). A model without a price costs 0, as before: that is the pricing table's answer, not a lost one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from mockserver.journal import RequestRecord
from mockserver.state import StateStore

LEDGER_KEY = "usage:ledger"
MAX_ROWS = 100_000
_FIELDS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class UsageLedger:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    @staticmethod
    def row(record: RequestRecord) -> tuple[Any, ...] | None:
        """The ledger row of a finished request (written by the recording middleware), or None."""
        if record.status != 200 or not record.usage:
            return None
        usage = record.usage
        # A tuple of plain values, not a list: the garbage collector stops tracking such tuples, and
        # the memory store keeps up to MAX_ROWS of them (lists made every full collection slower).
        return (
            record.started_at,
            record.organization,
            record.model,
            record.speed,
            usage.get("input_tokens", 0),
            record.delivered_output_tokens
            if record.delivered_output_tokens is not None
            else usage.get("output_tokens", 0),
            usage.get("cache_creation_input_tokens", 0),
            usage.get("cache_read_input_tokens", 0),
            _ledger_cost(record.cost_usd),
        )

    async def report(self, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
            lambda: dict.fromkeys(_FIELDS, 0) | {"cost_usd": 0.0, "unknown_cost_requests": 0}
        )
        for at, org, model, speed, inp, out, created, read, cost in await self._store.items(LEDGER_KEY):
            if (since is not None and at < since) or (until is not None and at >= until):
                continue
            group = groups[(org, model, speed)]
            group["requests"] += 1
            group["input_tokens"] += inp
            group["output_tokens"] += out
            group["cache_creation_input_tokens"] += created
            group["cache_read_input_tokens"] += read
            if isinstance(cost, int | float) and math.isfinite(cost):
                group["cost_usd"] += cost
            else:
                group["unknown_cost_requests"] += 1
        return [
            {
                "organization": org,
                "model": model,
                "speed": speed,
                **values,
                "cost_usd": round(values["cost_usd"], 6),
            }
            for (org, model, speed), values in sorted(groups.items())
        ]


def _ledger_cost(cost: float | None) -> float | None:
    # None (the model has no price) is free by the pricing table; a non-finite cost is unknown, and
    # stored as None by both stores alike (Redis's JSON already turned inf into null).
    if cost is None:
        return 0.0
    return cost if math.isfinite(cost) else None
