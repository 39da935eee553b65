"""State shared by every worker and replica through one Redis (the driver is imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from mockserver.errors import StoreUnavailable


class RedisStateStore:
    def __init__(self, url: str, *, key_prefix: str = "mockserver:") -> None:
        import redis.asyncio as aioredis

        self._url = url
        self._prefix = key_prefix + "state:"
        self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        # One EVALSHA per request instead of a five-command pipeline: redis-py spends far more CPU
        # packing and parsing a pipeline than Redis spends running the script.
        self._record = self._redis.register_script(_RECORD_SCRIPT)

    async def get(self, key: str) -> Any | None:
        raw = await self._call(self._redis.get, self._prefix + key)
        return None if raw is None else orjson.loads(raw)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        if not keys:
            return []
        raws = await self._call(self._redis.mget, [self._prefix + k for k in keys])
        return [None if raw is None else orjson.loads(raw) for raw in raws]

    async def put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._call(self._redis.set, self._prefix + key, orjson.dumps(value), px=px)

    async def delete(self, key: str) -> bool:
        return bool(await self._call(self._redis.delete, self._prefix + key))

    async def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        cursor = 0
        while True:
            cursor, batch = await self._call(
                self._redis.scan, cursor, match=self._prefix + prefix + "*", count=500
            )
            found.extend(k.decode()[len(self._prefix) :] for k in batch)
            if cursor == 0:
                return sorted(found)

    async def incr(self, key: str, amount: int = 1) -> int:
        return int(await self._call(self._redis.incrby, self._prefix + key, amount))

    async def append(self, key: str, value: Any, *, max_len: int) -> int:
        name = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(name, orjson.dumps(value))
            pipe.ltrim(name, -max_len, -1)
            length, _ = await self._call(pipe.execute)
        return max(0, int(length) - max_len)

    async def record(self, appends: Sequence[tuple[str, Any, int]], counters: Sequence[str] = ()) -> None:
        keys = [self._prefix + key for key, _, _ in appends] + [self._prefix + key for key in counters]
        args: list[Any] = [len(appends)]
        for _, value, max_len in appends:
            args += [orjson.dumps(value), max_len]
        await self._call(self._record, keys=keys, args=args)

    async def items(self, key: str) -> list[Any]:
        return [orjson.loads(raw) for raw in await self._call(self._redis.lrange, self._prefix + key, 0, -1)]

    async def clear(self) -> None:
        for key in await self.keys(""):
            await self._call(self._redis.delete, self._prefix + key)

    async def ping(self) -> None:
        await self._call(self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"the state store at {self._url} is unreachable: {exc}") from exc


# KEYS: the lists appended to, then the counters to increment. ARGV: the number of lists, then a
# (value, max_len) pair per list. Same effect as RPUSH + LTRIM per list and INCR per counter.
_RECORD_SCRIPT = """
local lists = tonumber(ARGV[1])
for i = 1, lists do
  redis.call('RPUSH', KEYS[i], ARGV[2 * i])
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[2 * i + 1]), -1)
end
for i = lists + 1, #KEYS do
  redis.call('INCR', KEYS[i])
end
return lists
"""
