"""A bucket store in Redis, shared by every mockserver process pointed at the same URL.

One Lua script (`redis.lua`) reads, decides and writes all buckets of a request atomically, with the
same arithmetic as `bucket.py`. The `redis` package is optional and imported only when a store is
built. Each bucket is a hash {level, updated} that expires a little after it would be full again,
because a missing bucket is a full one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from mockserver.clock import Clock, SystemClock
from mockserver.errors import ConfigError
from mockserver.limits.bucket import Admission, Draw, check_unique
from mockserver.limits.store import InvalidStoreURI, StoreUnavailable, redact

MAX_CONNECTIONS = 50

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


class RedisBucketStore:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "mockserver:",
        clock: Clock | None = None,
        use_server_time: bool = True,
        timeout: float = 1.0,
        expiry_margin: float = 60.0,
    ) -> None:
        """`timeout` bounds connecting and each command, so an outage fails a request quickly instead
        of hanging it. `expiry_margin` is how long a bucket outlives its refill: generous by default
        because expiry runs on Redis's wall clock while `now` may come from a fake clock that
        stands still."""
        try:
            from redis.asyncio.connection import parse_url
        except ImportError as exc:
            raise ConfigError(
                f"the store {redact(url)!r} needs the 'redis' package: pip install 'mockserver[redis]'"
            ) from exc
        try:
            parse_url(url)
        except ValueError as exc:
            raise InvalidStoreURI(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
        self.url = url
        self.key_prefix = key_prefix
        self._clock = clock if clock is not None else SystemClock()
        self._use_server_time = use_server_time
        self._timeout = timeout
        self._expiry_margin = expiry_margin
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Redis | None = None
        self._script: AsyncScript | None = None

    async def acquire(self, draws: Sequence[Draw], now: float | None = None) -> Admission:
        check_unique(draws)
        if not draws:
            return Admission(True, {})
        reply = await self._run("acquire", draws, [d.cost for d in draws], now)
        admitted, retry_after, limiting, never_fits, levels = reply
        return Admission(
            admitted=admitted,
            levels=levels,
            retry_after=retry_after,
            limiting=draws[limiting - 1].key if limiting else None,
            never_fits=never_fits,
        )

    async def adjust(
        self, key: str, capacity: float, rate: float, delta: float, now: float | None = None
    ) -> float:
        draw = Draw(key, capacity, 0.0, rate)
        *_, levels = await self._run("adjust", [draw], [delta], now)
        return levels[key]

    async def levels(self, draws: Sequence[Draw], now: float | None = None) -> dict[str, float]:
        check_unique(draws)
        if not draws:
            return {}
        *_, levels = await self._run("peek", draws, [0.0] * len(draws), now)
        return levels

    async def reset(self) -> None:
        client, _ = self._connection()
        pattern = _glob_escape(self._bucket_prefix()) + "*"
        with self._translating_errors():
            batch: list[Any] = []
            async for key in client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)

    async def ping(self) -> None:
        client, _ = self._connection()
        with self._translating_errors():
            await client.ping()

    async def close(self) -> None:
        client, loop = self._client, self._loop
        self._client, self._script, self._loop = None, None, None
        # Connections opened by another (likely closed) loop cannot be closed from this one.
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    def _bucket_prefix(self) -> str:
        # A sub-namespace, so that reset() cannot delete other mockserver data under the same prefix.
        return f"{self.key_prefix}limits:"

    async def _run(
        self, op: str, draws: Sequence[Draw], amounts: Sequence[float], now: float | None
    ) -> tuple[bool, float, int, bool, dict[str, float]]:
        if now is None and not self._use_server_time:
            now = self._clock.now()
        args: list[str] = [op, "" if now is None else repr(float(now)), repr(float(self._expiry_margin))]
        for draw, amount in zip(draws, amounts, strict=True):
            args += [repr(float(draw.capacity)), repr(float(draw.rate)), repr(float(amount))]
        keys = [self._bucket_prefix() + d.key for d in draws]
        _, script = self._connection()
        with self._translating_errors():
            reply = await script(keys=keys, args=args)
        admitted, retry_after, limiting, never_fits, *levels = reply
        return (
            int(admitted) == 1,
            float(retry_after),
            int(limiting),
            int(never_fits) == 1,
            {d.key: float(level) for d, level in zip(draws, levels, strict=True)},
        )

    def _connection(self) -> tuple[Redis, AsyncScript]:
        # redis.asyncio connections belong to the loop that opened them; a store reused from a new
        # loop (a test's second asyncio.run, say) gets a fresh client instead of a cryptic error.
        loop = asyncio.get_running_loop()
        if self._client is None or self._script is None or self._loop is not loop:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError

            pool = BlockingConnectionPool.from_url(
                self.url,
                # Bursts queue for a connection (up to `timeout`) instead of failing outright.
                max_connections=MAX_CONNECTIONS,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # One immediate retry replaces a connection killed by a Redis restart; more would
                # only delay the 503 during a real outage. Timeouts are not retried: the script may
                # still run once Redis wakes up, and a retry would then charge the request twice.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._client = Redis.from_pool(pool)
            self._script = self._client.register_script(_lua_source())
            self._loop = loop
        return self._client, self._script

    @contextlib.contextmanager
    def _translating_errors(self) -> Iterator[None]:
        import redis.exceptions as rex

        try:
            yield
        except (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"rate-limit store {redact(self.url)} is unavailable: {exc}") from exc


@functools.cache
def _lua_source() -> str:
    return resources.files(__package__).joinpath("redis.lua").read_text(encoding="utf-8")


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
