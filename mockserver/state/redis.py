"""State shared by every worker and replica through one Redis, via `mockserver.redis_client`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson

from mockserver.errors import ConfigError, StoreUnavailable
from mockserver.redis_client import REQUEST_STORE_WAIT, Arg, RedisClient, Script, not_a_request, redact

log = logging.getLogger("mockserver")


class RedisStateStore:
    def __init__(self, url: str, *, key_prefix: str = "mockserver:") -> None:
        try:
            # The timeout of a request's whole wait, so that its first call needs no timer of its own.
            self._redis = RedisClient(url, timeout=REQUEST_STORE_WAIT, name="state store")
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
        self._prefix = key_prefix + "state:"
        # `record`s waiting to be written, as (list keys, (value, max_len) args, counter keys)
        self._queued: list[tuple[list[str], list[Arg], list[str]]] = []
        self._queued_written: asyncio.Future[None] | None = None  # done once `_queued` is written
        self._batch_written: asyncio.Future[None] | None = None  # done once the batch in flight is
        self._writer: asyncio.Task[None] | None = None
        # Keys `record` has written: only reads of these wait for queued rows (the settings
        # generation, read in the background every few ms, must not queue behind the journal).
        self._recorded: set[str] = set()

    async def get(self, key: str) -> Any | None:
        if key in self._recorded:
            await self._written()
        raw = await self._redis.execute("GET", self._prefix + key)
        return None if raw is None else orjson.loads(raw)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        if not keys:
            return []
        if self._recorded.intersection(keys):
            await self._written()
        raws = await self._redis.execute("MGET", *[self._prefix + k for k in keys])
        return [None if raw is None else orjson.loads(raw) for raw in raws]

    async def put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        expiry: tuple[Arg, ...] = () if ttl is None else ("PX", max(1, int(ttl * 1000)))
        await self._redis.execute("SET", self._prefix + key, orjson.dumps(value), *expiry)

    async def delete(self, key: str) -> bool:
        await self._written()
        return bool(await self._redis.execute("DEL", self._prefix + key))

    async def keys(self, prefix: str) -> list[str]:
        await self._written()
        found: list[str] = []
        async for batch in self._redis.scan(self._prefix + prefix):
            found.extend(k.decode()[len(self._prefix) :] for k in batch)
        return sorted(found)

    async def incr(self, key: str, amount: int = 1) -> int:
        return int(await self._redis.execute("INCRBY", self._prefix + key, amount))

    async def append(self, key: str, value: Any, *, max_len: int) -> int:
        # A script, not MULTI/EXEC: the connection is shared, so another coroutine's command could land
        # inside the transaction.
        length = await self._redis.evalsha(_APPEND, [self._prefix + key], [orjson.dumps(value), max_len])
        return max(0, int(length) - max_len)

    async def record(self, appends: Sequence[tuple[str, Any, int]], counters: Sequence[str] = ()) -> None:
        """Queued, then written together with every other request's that finished in the same pass of
        the event loop: one EVALSHA for all, and no request waits for its own. This store's reads
        wait for queued writes first, so a worker always reads what it recorded."""
        args: list[Arg] = []
        lists: list[str] = []
        for key, value, max_len in appends:
            args += [orjson.dumps(value), max_len]
            lists.append(self._prefix + key)
            self._recorded.add(key)
        self._recorded.update(counters)
        loop = asyncio.get_running_loop()
        self._queued.append((lists, args, [self._prefix + key for key in counters]))
        if self._queued_written is None or self._queued_written.get_loop() is not loop:
            self._queued_written = loop.create_future()  # (a store outliving its loop starts afresh)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_queued())

    async def _write_queued(self) -> None:
        # Not on any request's path: each write is bounded by the client's own timeout, and a
        # failed one is logged, never raised into a request.
        not_a_request()
        while self._queued:
            batch, self._queued = self._queued, []
            self._batch_written, self._queued_written = self._queued_written, None
            lists = [key for keys, _, _ in batch for key in keys]
            keys, args = _record_command(batch)
            try:
                await self._redis.evalsha(_RECORD, keys, args)
            except StoreUnavailable as exc:
                log.warning("%d journal and ledger rows not kept: %s", len(lists), exc)
            except Exception:  # nobody awaits this task: say what was lost rather than go quiet
                log.exception("%d journal and ledger rows not kept", len(lists))
            except BaseException:  # cancelled (the loop is closing): nothing more will be written
                lost = len(lists) + sum(len(keys) for keys, _, _ in self._queued)
                log.warning("%d journal and ledger rows not kept: the event loop closed", lost)
                for pending in (self._queued_written, self._batch_written):
                    if pending is not None and not pending.done():
                        pending.set_result(None)
                self._queued, self._queued_written = [], None
                raise
            finally:
                if self._batch_written is not None and not self._batch_written.done():
                    self._batch_written.set_result(None)
                self._batch_written = None

    async def _written(self) -> None:
        """Wait until what was recorded before this call is in Redis (not what is recorded later:
        under load the writer never idles)."""
        loop = asyncio.get_running_loop()
        if self._queued and (self._writer is None or self._writer.done()):
            self._writer = loop.create_task(self._write_queued())  # its writer was cancelled unstarted
        pending = self._queued_written or self._batch_written
        if pending is not None and pending.get_loop() is loop:
            await self._redis.within_request_wait(lambda: asyncio.shield(pending))

    async def items(self, key: str) -> list[Any]:
        if key in self._recorded:
            await self._written()
        return [orjson.loads(raw) for raw in await self._redis.execute("LRANGE", self._prefix + key, 0, -1)]

    async def add_field(self, key: str, field: str, value: Any) -> bool:
        return bool(await self._redis.execute("HSETNX", self._prefix + key, field, orjson.dumps(value)))

    async def delete_field(self, key: str, field: str) -> bool:
        return bool(await self._redis.execute("HDEL", self._prefix + key, field))

    async def fields(self, key: str) -> dict[str, Any]:
        flat = await self._redis.execute("HGETALL", self._prefix + key)
        return {name.decode(): orjson.loads(raw) for name, raw in zip(flat[::2], flat[1::2], strict=True)}

    async def clear(self) -> None:
        await self._written()
        async for names in self._redis.scan(self._prefix):
            await self._redis.execute("DEL", *names)

    async def ping(self) -> None:
        await self._redis.execute("PING")

    async def close(self) -> None:
        await self._written()
        writer = self._writer
        if writer is not None and not writer.done() and writer.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([writer])  # it runs until the queue is empty (wait: never raises)
        await self._redis.close()


# KEYS: the list. ARGV: the value, max_len. Returns the length after RPUSH, before LTRIM.
_APPEND = Script("""
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return length
""")


def _record_command(batch: Sequence[tuple[list[str], list[Arg], list[str]]]) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of `_RECORD` for a batch of `record` calls. A list's values go in runs that share
    a bound (in practice one run per list), and counters are summed: a batch of a dozen requests is
    five commands in Redis rather than sixty, each of which costs ~2.5 µs inside a script."""
    runs: dict[str, list[tuple[Arg, list[Arg]]]] = {}
    for lists, pairs, _ in batch:
        for i, key in enumerate(lists):
            value, max_len = pairs[2 * i], pairs[2 * i + 1]
            key_runs = runs.setdefault(key, [])
            if key_runs and key_runs[-1][0] == max_len:
                key_runs[-1][1].append(value)
            else:
                key_runs.append((max_len, [value]))
    counts: dict[str, int] = {}
    for _, _, counters in batch:
        for key in counters:
            counts[key] = counts.get(key, 0) + 1
    keys: list[str] = []
    args: list[Arg] = [sum(len(key_runs) for key_runs in runs.values())]
    for key, key_runs in runs.items():
        for max_len, values in key_runs:
            keys.append(key)
            args += [max_len, len(values), *values]
    keys += counts
    args += counts.values()
    return keys, args


# One EVALSHA per batch of finished requests. KEYS: a list per run of values (a key repeats when its
# bound changed within the batch), then the counters. ARGV: the number of runs; per run its bound,
# its number of values and the values; per counter the amount. Same effect as RPUSH + LTRIM per
# value and INCR per count, in order.
_RECORD = Script("""
local runs = tonumber(ARGV[1])
local at = 2
for i = 1, runs do
  local max_len, count = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local first, last = at + 2, at + 1 + count
  for from = first, last, 1000 do  -- unpack is bounded by Lua's C stack
    redis.call('RPUSH', KEYS[i], unpack(ARGV, from, math.min(from + 999, last)))
  end
  redis.call('LTRIM', KEYS[i], -max_len, -1)
  at = last + 1
end
for i = runs + 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[at])
  at = at + 1
end
return runs
""")
