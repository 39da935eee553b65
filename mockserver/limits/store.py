"""Where bucket states live, chosen by URI: `memory://` in-process, `redis://` shared by replicas.

Every store runs the same `bucket.py` arithmetic, so a contract test suite runs against all of them.
`now=None` means "the store's own time": the memory store reads its injected clock, the Redis store
reads the Redis server's TIME so that several mockserver processes agree on one clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from mockserver.clock import Clock
from mockserver.errors import ConfigError
from mockserver.errors import StoreUnavailable as StoreUnavailable  # re-exported: part of this API
from mockserver.limits.bucket import Admission, Draw
from mockserver.redis_client import redact as redact  # re-exported: it lives with the client that names URLs

SUPPORTED_SCHEMES = ("memory://", "redis://host:port/db", "rediss://host:port/db", "unix:///path/redis.sock")


class InvalidStoreURI(ConfigError):
    pass


class BucketStore(Protocol):
    async def acquire(self, draws: Sequence[Draw], now: float | None = None) -> Admission:
        """Decide and, if admitted, charge every draw in one atomic step."""
        ...

    async def adjust(
        self, key: str, capacity: float, rate: float, delta: float, now: float | None = None
    ) -> float:
        """Add `delta` tokens to one bucket (see `bucket.adjust`) and return its new level."""
        ...

    async def levels(self, draws: Sequence[Draw], now: float | None = None) -> dict[str, float]:
        """Current levels of the draws' buckets, without charging anything."""
        ...

    async def reset(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def bucket_store_from_uri(
    uri: str, *, clock: Clock | None = None, key_prefix: str = "mockserver:"
) -> BucketStore:
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme == "memory":
        if uri.lower().rstrip("/") != "memory:":
            raise InvalidStoreURI(f"memory store URI takes no host or path: {redact(uri)!r}; use 'memory://'")
        from mockserver.limits.memory import MemoryBucketStore

        return MemoryBucketStore(clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        from mockserver.limits.redis import RedisBucketStore

        return RedisBucketStore(uri, key_prefix=key_prefix, clock=clock)
    raise InvalidStoreURI(
        f"unsupported rate-limit store URI {redact(uri)!r}; supported: {', '.join(SUPPORTED_SCHEMES)}"
    )
