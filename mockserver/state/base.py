"""The `StateStore` protocol and the URI registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mockserver.clock import Clock
from mockserver.errors import ConfigError


class StateStore(Protocol):
    """JSON documents by key, counters, bounded lists and tables of named fields. Expiry is for
    garbage collection only: anything whose lifetime tests check (cache TTLs, batch expiry) stores
    its own deadline, so a fake clock drives it on every backend."""

    async def get(self, key: str) -> Any | None: ...

    async def get_many(self, keys: list[str]) -> list[Any | None]: ...

    async def put(self, key: str, value: Any, *, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def keys(self, prefix: str) -> list[str]: ...

    async def incr(self, key: str, amount: int = 1) -> int: ...

    async def append(self, key: str, value: Any, *, max_len: int) -> int:
        """Append to a list kept at most `max_len` long (oldest dropped); returns how many were dropped.
        The store takes ownership of `value`: do not change it afterwards."""
        ...

    async def record(self, appends: Sequence[tuple[str, Any, int]], counters: Sequence[str] = ()) -> None:
        """Several `append`s (key, value, max_len) and counter increments in one round trip: what a
        finished request writes (journal, usage ledger) on every request."""
        ...

    async def items(self, key: str) -> list[Any]: ...

    async def add_field(self, key: str, field: str, value: Any) -> bool:
        """Set `field` in the table at `key` unless it is there already, atomically: of two workers
        adding the same field at once, exactly one gets True."""
        ...

    async def delete_field(self, key: str, field: str) -> bool:
        """Remove one field of a table; whether it was there."""
        ...

    async def fields(self, key: str) -> dict[str, Any]:
        """A table's fields and values (in no particular order)."""
        ...

    async def clear(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def state_store_from_uri(uri: str, *, clock: Clock, key_prefix: str = "mockserver:") -> StateStore:
    scheme = uri.split("://", 1)[0]
    if scheme == "memory":
        from mockserver.state.memory import MemoryStateStore

        return MemoryStateStore(clock)
    if scheme in ("redis", "rediss", "unix"):
        from mockserver.state.redis import RedisStateStore

        return RedisStateStore(uri, key_prefix=key_prefix)
    raise ConfigError(f"unsupported storage URI {uri!r}; use memory:// or redis://host:port/db")
