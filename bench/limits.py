"""Rate-limiter cost and accuracy, measured in one run.

    python bench/limits.py [--seconds 6] [--overload-seconds 30]

1. Decision overhead: the same non-streaming load (wrk when present) against mockserver with the
   limiter off, with `memory://` and with `redis://` (a private redis-server); prints requests/s and
   the extra microseconds per request each store costs over "off".
2. Accuracy under overload: a server with a fast input-token limit of 60,000/min gets 10x that demand
   for `--overload-seconds` after its initial bucket is drained; admitted tokens per minute must be
   within 1% of the limit, for both stores.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (
    HEADERS,
    free_port,
    measure,
    mockserver_env,
    private_redis,
    run_python_load,
    start,
    wait_until_up,
    wrk_script,
)

from mockserver.tokens import count_input

LIMIT = 60_000  # fast input tokens per minute
PROMPT = [{"role": "user", "content": "x" * 396}]  # 100 input tokens by the mock's tokenizer
COST = count_input(messages=PROMPT)


def serve(storage: str, extra: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**mockserver_env(storage), **extra}
    process = start(
        [sys.executable, "-m", "mockserver", "serve", "--port", str(port), "--log-level", "warning"], env
    )
    return process, f"http://127.0.0.1:{port}"


def overhead(args: argparse.Namespace, redis_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(Path(tmp)) if shutil.which("wrk") else None
        results = {}
        for name, storage, extra in (
            ("limiter off", "memory://", {"MOCKSERVER_LIMITS__ENABLED": "false"}),
            ("memory://", "memory://", {}),
            ("redis://", redis_url, {}),
        ):
            process, url = serve(storage, extra)
            results[name] = measure(name, process, url, args, script)
    base = results["limiter off"]["rps"]
    print("\n| limiter | requests/s | p50 ms | p99 ms | cost per request |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        extra_us = (1 / r["rps"] - 1 / base) * 1e6
        cost = "baseline" if name == "limiter off" else f"{extra_us:+.0f} µs"
        print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {cost} |")


async def offer(url: str, seconds: float, per_second: float) -> tuple[int, int]:
    """Send `per_second` fast requests for `seconds`; return (admitted, refused)."""
    body = {"model": "claude-opus-4-7", "max_tokens": 1, "speed": "fast", "messages": PROMPT}
    admitted = refused = 0
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits, timeout=30) as client:

        async def one() -> None:
            nonlocal admitted, refused
            status = (await client.post("/v1/messages", json=body)).status_code
            if status == 200:
                admitted += 1
            elif status == 429:
                refused += 1
            else:
                raise RuntimeError(f"unexpected status {status}")

        tasks = []
        started = time.monotonic()
        for n in range(int(seconds * per_second)):  # bounded: a fixed number of requests
            delay = started + n / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return admitted, refused


async def drain(url: str) -> None:
    """Empty the bucket's initial minute of capacity: send until the first 429 (bounded)."""
    body = {"model": "claude-opus-4-7", "max_tokens": 1, "speed": "fast", "messages": PROMPT}
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as client:
        for _ in range(10 * LIMIT // COST):
            if (await client.post("/v1/messages", json=body)).status_code == 429:
                return
    raise RuntimeError("the bucket never ran dry")


def accuracy(args: argparse.Namespace, redis_url: str) -> bool:
    ok = True
    print(
        f"\nfast input limit {LIMIT:,}/min, {COST} tokens per request, "
        f"10x demand for {args.overload_seconds} s"
    )
    print("\n| store | offered req | admitted req | admitted tokens/min | vs limit | target |")
    print("|---|---|---|---|---|---|")
    for name, storage in (("memory://", "memory://"), ("redis://", redis_url)):
        process, url = serve(storage, {"MOCKSERVER_LIMITS__FAST_INPUT_TOKENS_PER_MINUTE": str(LIMIT)})
        try:
            wait_until_up(url + "/v1/messages")
            rate = LIMIT / 60 / COST  # admissible requests per second
            asyncio.run(drain(url))
            admitted, refused = asyncio.run(offer(url, args.overload_seconds, 10 * rate))
        finally:
            process.terminate()
            process.wait(timeout=20)
        per_minute = admitted * COST / args.overload_seconds * 60
        error = per_minute / LIMIT - 1
        passed = abs(error) <= 0.01
        ok &= passed
        offered = admitted + refused
        verdict = "PASS" if passed else "MISS"
        print(f"| {name} | {offered} | {admitted} | {per_minute:,.0f} | {error:+.2%} | ±1% {verdict} |")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with private_redis() as redis_url:
        overhead(args, redis_url)
        return 0 if accuracy(args, redis_url) else 1


if __name__ == "__main__":
    _ = run_python_load  # the harness falls back to it when wrk is missing
    sys.exit(main())
