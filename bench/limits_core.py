"""Throughput of the limiter core: pure decide(), the memory store and, given a URL, the Redis store.

    python bench/limits_core.py [redis://127.0.0.1:6379/0]

Prints operations per second; compare runs on one machine, not absolute numbers.
"""

from __future__ import annotations

import asyncio
import sys
import time

from mockserver.limits import LimitTable, MemoryBucketStore, RedisBucketStore, decide, draws_for

T0 = 1_800_000_000.0
DRAWS = draws_for("org", "fast", "opus", LimitTable(), input_tokens=1_000, max_tokens=1_000)


def report(name, n, seconds):
    print(f"{name:<28} {n / seconds:>12,.0f} ops/s  ({seconds * 1e6 / n:.1f} µs/op)")


def bench_decide(n=200_000):
    states = {}
    started = time.perf_counter()
    for i in range(n):
        _, new = decide(DRAWS, states, T0 + i * 0.01)
        states.update(new)
    report("bucket.decide", n, time.perf_counter() - started)


async def bench_store(name, store, n, concurrency=1):
    async def worker(offset):
        for i in range(offset, n, concurrency):
            await store.acquire(DRAWS, now=T0 + i * 0.01)

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    report(name, n, time.perf_counter() - started)
    await store.reset()
    await store.close()


async def main(redis_url):
    await bench_store("MemoryBucketStore", MemoryBucketStore(), 100_000)
    if redis_url:
        for concurrency in (1, 32):
            store = RedisBucketStore(redis_url, key_prefix="bench:")
            await bench_store(f"RedisBucketStore x{concurrency}", store, 20_000, concurrency)


if __name__ == "__main__":
    bench_decide()
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
