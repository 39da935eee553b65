"""A bucket store in Redis, shared by every mockserver process pointed at the same URL.

One Lua script (`redis.lua`) reads, decides and writes all buckets of a request atomically, with the
same arithmetic as `bucket.py`. It talks to Redis through `mockserver.redis_client` (hiredis, imported
only when a store is built). Each bucket is a string "level updated" that expires a little after it
would be full again, because a missing bucket is a full one.

The requests that reach the store in one pass of the event loop go to Redis as one script call and
run there one after another, as separate calls would: under load a dozen requests share the cost of
an EVALSHA, which in Redis is more than the bucket work of a small request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any

from mockserver.clock import Clock, SystemClock
from mockserver.limits.bucket import Admission, Draw, check_unique
from mockserver.limits.store import InvalidStoreURI
from mockserver.redis_client import (
    REQUEST_STORE_WAIT,
    RedisClient,
    ResponseError,
    Script,
    not_a_request,
    redact,
)


class _Batch:
    """The script calls of one loop pass: KEYS and ARGV of one EVALSHA, and who waits for which reply."""

    __slots__ = ("args", "keys", "loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.keys: list[str] = []
        self.args: list[Any] = [0]  # the number of calls, set when it is sent
        self.waiting: list[asyncio.Future[Any]] = []


class RedisBucketStore:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "mockserver:",
        clock: Clock | None = None,
        use_server_time: bool = True,
        timeout: float = REQUEST_STORE_WAIT,
        expiry_margin: float = 60.0,
    ) -> None:
        """`timeout` bounds connecting and each command, so an outage fails a request quickly instead
        of hanging it. `expiry_margin` is how long a bucket outlives its refill: generous by default
        because expiry runs on Redis's wall clock while `now` may come from a fake clock that
        stands still."""
        try:
            # A Redis restart costs one immediate resend of the commands it cut off; a timeout none.
            self._redis = RedisClient(url, timeout=timeout, name="rate-limit store")
        except ValueError as exc:
            raise InvalidStoreURI(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
        self.url = url
        self.key_prefix = key_prefix
        self._clock = clock if clock is not None else SystemClock()
        self._use_server_time = use_server_time
        self._expiry_margin = expiry_margin
        self._margin_text = repr(float(expiry_margin))
        self._batch: _Batch | None = None  # the one still taking calls
        self._sending: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references

    async def acquire(self, draws: Sequence[Draw], now: float | None = None) -> Admission:
        check_unique(draws)
        if not draws:
            return Admission(True, {})
        reply = await self._run("acquire", draws, [(d.cost, d.refund) for d in draws], now)
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
        *_, levels = await self._run("adjust", [draw], [(delta, 0.0)], now)
        return levels[key]

    async def levels(self, draws: Sequence[Draw], now: float | None = None) -> dict[str, float]:
        check_unique(draws)
        if not draws:
            return {}
        *_, levels = await self._run("peek", draws, [(0.0, 0.0)] * len(draws), now)
        return levels

    async def reset(self) -> None:
        async for keys in self._redis.scan(self._bucket_prefix()):
            await self._redis.execute("UNLINK", *keys)

    async def ping(self) -> None:
        await self._redis.execute("PING")

    async def close(self) -> None:
        await self._redis.close()

    def _bucket_prefix(self) -> str:
        # A sub-namespace, so that reset() cannot delete other mockserver data under the same prefix.
        return f"{self.key_prefix}limits:"

    async def _run(
        self, op: str, draws: Sequence[Draw], amounts: Sequence[tuple[float, float]], now: float | None
    ) -> tuple[bool, float, int, bool, dict[str, float]]:
        """`amounts`: (amount, refund) per draw."""
        if now is None and not self._use_server_time:
            now = self._clock.now()
        prefix = self._bucket_prefix()
        keys = [prefix + d.key for d in draws]
        args = [op, "" if now is None else repr(float(now)), self._margin_text, len(draws)]
        # A Draw's capacity and rate are floats already: repr() spells them as float() reads them back.
        for draw, (amount, refund) in zip(draws, amounts, strict=True):
            args += (repr(draw.capacity), repr(draw.rate), repr(float(amount)), repr(float(refund)))
        # The batch goes in the background; its caller waits within its request's store time.
        reply = await self._redis.within_request_wait(lambda: self._join(keys, args))
        admitted, retry_after, limiting, never_fits, *levels = reply
        return (
            int(admitted) == 1,
            float(retry_after),
            int(limiting),
            int(never_fits) == 1,
            {d.key: float(level) for d, level in zip(draws, levels, strict=True)},
        )

    def _join(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The future of this call's reply in the batch of this loop pass. Only now, with nothing
        left to fail, does the call join a batch: its keys, its arguments and its waiter must go in
        together or the batch's replies would go to the wrong callers."""
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None or batch.loop is not loop:
            batch = self._batch = _Batch(loop)
            # Its first step comes after the calls this pass has already made ready: they join.
            sending = loop.create_task(self._send(batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
        reply = loop.create_future()
        batch.keys += keys
        batch.args += args
        batch.waiting.append(reply)
        return reply

    async def _send(self, batch: _Batch) -> None:
        not_a_request()  # one call for many requests: only the client's own timeout bounds it
        if self._batch is batch:
            self._batch = None
        batch.args[0] = len(batch.waiting)
        try:
            replies = await self._redis.evalsha(_script(), batch.keys, batch.args)
            if not isinstance(replies, list) or len(replies) != len(batch.waiting):
                raise ResponseError(f"the bucket script answered {replies!r} to {len(batch.waiting)} calls")
        except Exception as exc:  # StoreUnavailable above all: every caller in the batch gets it
            for waiting in batch.waiting:
                if not waiting.done():
                    waiting.set_exception(_own_copy(exc))
            return
        except BaseException:  # cancelled with its loop: so are the callers, or they would hang
            for waiting in batch.waiting:
                waiting.cancel()
            raise
        for waiting, reply in zip(batch.waiting, replies, strict=True):  # lengths checked above
            if waiting.done():  # its caller was cancelled; Redis ran its call all the same
                continue
            if isinstance(reply, ResponseError):
                waiting.set_exception(reply)
            else:
                waiting.set_result(reply)


def _own_copy(exc: Exception) -> Exception:
    """A fresh exception per caller: one instance raised in many tasks would gather all their
    tracebacks."""
    try:
        return type(exc)(*exc.args)
    except Exception:
        return exc


@functools.cache
def _script() -> Script:
    return Script(resources.files(__package__).joinpath("redis.lua").read_text(encoding="utf-8"))
