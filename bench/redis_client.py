"""CPU per Redis command: redis-py's asyncio client against mockserver.redis_client, in the same run.

    python bench/redis_client.py [--commands 20000] [--concurrency 32]

Against a private redis-server on a free port, each client runs `--commands` EVALSHA calls of a
trivial script, once from `--concurrency` coroutines at a time and once from a single coroutine, on
the default asyncio loop and on uvloop (what uvicorn runs) when it is installed. Prints the CPU time
of this process per command (`time.process_time()`, so Redis's own CPU is not counted) and the
commands per second of wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import private_redis

from mockserver.redis_client import RedisClient, Script

SOURCE = "return ARGV[1]"
WARMUP = 500


async def run(call: Callable[[], Awaitable[object]], commands: int, concurrency: int) -> tuple[float, float]:
    """CPU µs per command and commands per wall-clock second."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(worker(WARMUP // concurrency + 1) for _ in range(concurrency)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(commands // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = commands // concurrency * concurrency
    return cpu / done * 1e6, done / wall


async def redis_py(url: str, commands: int, concurrency: int) -> tuple[float, float]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    script = client.register_script(SOURCE)
    try:
        return await run(lambda: script(keys=[], args=["x"]), commands, concurrency)
    finally:
        await client.aclose()


async def lean(url: str, commands: int, concurrency: int) -> tuple[float, float]:
    client = RedisClient(url)
    script = Script(SOURCE)
    try:
        return await run(lambda: client.evalsha(script, (), ("x",)), commands, concurrency)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="the best of this many runs is printed")
    args = parser.parse_args()
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    print("| loop | client | coroutines | CPU µs/command | commands/s |")
    print("|---|---|---|---|---|")
    with private_redis() as url:
        for loop_name, new_loop in loops.items():
            for concurrency in (args.concurrency, 1):
                for client_name, bench in (("redis-py", redis_py), ("redis_client", lean)):
                    rounds = []
                    for _ in range(args.rounds):
                        with asyncio.Runner(loop_factory=new_loop) as runner:
                            rounds.append(runner.run(bench(url, args.commands, concurrency)))
                    cpu, rate = min(rounds)
                    print(f"| {loop_name} | {client_name} | {concurrency} | {cpu:.1f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
