"""The embedded default: plain dicts in this process (nothing shared, nothing persisted)."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence
from typing import Any

from mockserver.clock import Clock


class MemoryStateStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[str, tuple[Any, float | None]] = {}
        self._lists: dict[str, deque[Any]] = {}
        self._tables: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> Any | None:
        return self._live(key)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        return [self._live(key) for key in keys]

    async def put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        # A deep copy gives callers the same isolation a serialising backend gives them.
        expires = None if ttl is None else self._clock.now() + ttl
        self._values[key] = (copy.deepcopy(value), expires)

    async def delete(self, key: str) -> bool:
        found = [store.pop(key, None) is not None for store in (self._values, self._lists, self._tables)]
        return any(found)

    async def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in list(self._values) if k.startswith(prefix) and self._live(k) is not None)

    async def incr(self, key: str, amount: int = 1) -> int:
        return self._incr(key, amount)

    def _incr(self, key: str, amount: int) -> int:
        value = int(self._live(key) or 0) + amount
        self._values[key] = (value, None)
        return value

    async def append(self, key: str, value: Any, *, max_len: int) -> int:
        return self._append(key, value, max_len)

    def _append(self, key: str, value: Any, max_len: int) -> int:
        # Appended values are owned by the store from here on (callers pass fresh rows), so no copy:
        # the journal appends on every request. Reads still copy.
        # A bounded deque drops its oldest item in O(1); a full 1,000-row journal list shifted every
        # row on every request.
        items = self._lists.get(key)
        dropped = max(0, (0 if items is None else len(items)) + 1 - max_len)
        if items is None or items.maxlen != max_len:  # new, or its bound was changed (settings)
            items = self._lists[key] = deque(items or (), maxlen=max_len)
        items.append(value)
        return dropped

    async def record(self, appends: Sequence[tuple[str, Any, int]], counters: Sequence[str] = ()) -> None:
        # Called for every request: plain calls, not one awaited coroutine per list and counter.
        for key, value, max_len in appends:
            self._append(key, value, max_len)
        for key in counters:
            self._incr(key, 1)

    async def items(self, key: str) -> list[Any]:
        return copy.deepcopy(list(self._lists.get(key, ())))

    async def add_field(self, key: str, field: str, value: Any) -> bool:
        table = self._tables.setdefault(key, {})
        if field in table:
            return False
        table[field] = copy.deepcopy(value)
        return True

    async def delete_field(self, key: str, field: str) -> bool:
        table = self._tables.get(key, {})
        found = field in table
        table.pop(field, None)
        if not table:
            self._tables.pop(key, None)
        return found

    async def fields(self, key: str) -> dict[str, Any]:
        return copy.deepcopy(self._tables.get(key, {}))

    async def clear(self) -> None:
        self._values.clear()
        self._lists.clear()
        self._tables.clear()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _live(self, key: str) -> Any | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= self._clock.now():
            del self._values[key]
            return None
        # Immutable values need no copy (counters, tokens): a deep copy of an int still costs a call.
        return value if type(value) in _ATOMIC else copy.deepcopy(value)


_ATOMIC = frozenset({str, int, float, bool, type(None)})
