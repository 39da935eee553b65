"""The request journal: what each API call asked for and what it got, for tests to inspect.

An API key is never stored: entries carry `api_key_id`, a short digest that tells keys apart.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from mockserver.settings import JournalSettings
from mockserver.state import StateStore

ENTRIES_KEY = "journal:entries"
APPENDED_KEY = "journal:appended"
FILTERS = (
    "model", "speed", "status", "path", "api_key_id", "organization", "error_type", "stream", "scripted",
)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def api_key_id(api_key: str) -> str:
    # Memoised: a few keys send every request, and each request digests its key twice.
    return "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(init=False)
class RequestRecord:
    """Filled in as a request travels through the server, then appended to the journal once.

    Made for every API request, so `__init__` sets only what it is given: the other fields read
    their class-level defaults until a handler sets them.
    """

    request_id: str
    method: str
    path: str
    started_at: float
    api_key_id: str | None = None
    organization: str | None = None
    model: str | None = None
    speed: str | None = None  # the speed that served the request
    requested_speed: str | None = None  # the `speed` field as sent (None when absent)
    betas: list[str] = field(default_factory=list)
    stream: bool = False
    max_tokens: int | None = None
    retry_count: int | None = None
    status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    delivered_output_tokens: int | None = None
    ttft_seconds: float | None = None
    duration_seconds: float | None = None
    output_tokens_per_second: float | None = None
    fault: str | None = None
    scripted: bool = False  # answered by a reply or error a test scripted (POST /_admin/replies)
    rate_limited_by: str | None = None
    retry_after: float | None = None  # the retry-after header sent back, in seconds
    cost_usd: float | None = None
    body: Any = None

    def __init__(self, request_id: str, method: str, path: str, started_at: float) -> None:
        self.request_id, self.method, self.path, self.started_at = request_id, method, path, started_at
        self.betas = []

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: asdict's deep copy was a tenth of a request's cost, and the record is
        # finished (nothing mutates it) by the time it is rendered. The defaults come first so the
        # keys keep declaration order; what was set overrides them.
        return {**_DEFAULTS, **self.__dict__}


_DEFAULTS: dict[str, Any] = {
    f.name: None if f.default is MISSING else f.default for f in fields(RequestRecord) if f.init
}


class Journal:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    @staticmethod
    def row(entry: RequestRecord, settings: JournalSettings) -> dict[str, Any] | None:
        """The journal row of a finished request (written by the recording middleware), or None."""
        if not settings.enabled:
            return None
        data = entry.to_json()
        if settings.zero_data_retention or not settings.record_bodies:
            data["body"] = None
        if settings.zero_data_retention:
            data["error_message"] = None
        return data

    async def entries(self, filters: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        rows = await self._store.items(ENTRIES_KEY)
        for name, wanted in (filters or {}).items():
            rows = [row for row in rows if _matches(row.get(name), wanted)]
        return rows

    async def dropped(self) -> int:
        """Entries pushed out by the size bound: all ever appended minus those still kept."""
        appended = int(await self._store.get(APPENDED_KEY) or 0)
        return max(0, appended - len(await self._store.items(ENTRIES_KEY)))

    async def clear(self) -> None:
        await self._store.delete(ENTRIES_KEY)
        await self._store.delete(APPENDED_KEY)


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    if isinstance(value, int) and len(wanted) == 3 and wanted.endswith("xx"):
        return str(value)[0] == wanted[0]  # status=4xx
    return str(value) == wanted
