"""User-space CPU instructions per request of whole servers, counted by valgrind: a noise-free
companion to bench/throughput.py.

    python bench/instructions.py [--requests 400] [--warmup 100] [--no-redis]

Starts, one after the other, the same three servers as bench/throughput.py (bare Starlette, mockserver
with `memory://`, mockserver with a private `redis://`), each as one uvicorn worker running under
`valgrind --tool=callgrind`. Each gets `--warmup` requests of the throughput mix, then its counters
are zeroed (`callgrind_control -z`), it serves `--requests` more, and the counters are dumped: the
instructions it executed, divided by the requests, are its cost per request. Only the server process
is counted (not the kernel's share of its syscalls, nor redis-server, nor this client), and the
count is the same on a busy machine as on a quiet one, so it shows small changes that throughput
runs on a shared machine cannot (their rounds differ by ±20%). Slow: a few minutes.

Work on a timer is counted per second, not per request, and valgrind slows a server ~50x: the
`redis://` figure includes ~2 reads of the shared settings generation (one every 10 ms) per request,
where a server at full speed does one per ~20 requests; and with one request at a time each journal
row is its own Redis write, where under load a write carries the rows of a dozen requests.

The ratio printed is bare / server: what the throughput ratio would be if every instruction cost
the same and the kernel cost nothing. Needs valgrind (Debian's package `valgrind`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import throughput  # bench/ is on the path of a script run from it: the same servers, mix and settings

STARTUP_DEADLINE = 300.0  # seconds: importing the app under valgrind is ~50x slower than natively


def drive(url: str, count: int) -> None:
    mix = [json.dumps(body) for body in throughput.bodies()]
    with httpx.Client(headers=throughput.HEADERS, timeout=120) as client:
        for i in range(count):
            client.post(url + "/v1/messages", content=mix[i % len(mix)]).raise_for_status()


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def under_callgrind(command: list[str], env: dict[str, str], out: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process
    finally:
        throughput.stop(process)  # the dump is read by then; a kill after its grace period is fine


def instructions_per_request(
    command: list[str], env: dict[str, str], args: argparse.Namespace, directory: Path, name: str
) -> float:
    port = throughput.free_port()
    out = directory / f"{name}.callgrind"
    with under_callgrind([*command, "--port", str(port)], env, out) as process:
        url = f"http://127.0.0.1:{port}"
        throughput.wait_until_up(url, deadline=STARTUP_DEADLINE)
        drive(url, args.warmup)
        callgrind_control("--zero", str(process.pid))
        drive(url, args.requests)
        callgrind_control("--dump", str(process.pid))
        dumps = sorted(directory.glob(f"{name}.callgrind.*"))
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {name}")
        totals = re.search(r"^totals:\s+(\d+)", dumps[-1].read_text(), re.MULTILINE)
        if totals is None:
            raise RuntimeError(f"no totals line in {dumps[-1]}")
        return int(totals.group(1)) / args.requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="counted requests per server")
    parser.add_argument("--warmup", type=int, default=100, help="requests before counting starts")
    parser.add_argument("--no-redis", action="store_true", help="skip the redis:// server")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    print(
        f"callgrind, user-space instructions of the server process; {args.warmup} warm-up then "
        f"{args.requests} counted requests of the throughput mix, one at a time"
    )
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        (directory / "bare_app.py").write_text(throughput.BARE_APP)
        bare = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", tmp]
        bare += ["--log-level", "warning", "--no-access-log"]
        mockserver = [sys.executable, "-m", "mockserver", "serve", "--log-level", "warning"]
        servers = [("bare", bare, {}), ("memory", mockserver, throughput.mockserver_env("memory://"))]
        if not args.no_redis:
            redis_url = stack.enter_context(throughput.private_redis())
            servers.append(("redis", mockserver, throughput.mockserver_env(redis_url)))
        for name, command, env in servers:
            results[name] = instructions_per_request(command, env, args, directory, name)
            print(f"  {name:<7} {results[name]:>12,.0f} instructions/request")

    print()
    print("| server | instructions/request | bare / server |")
    print("|---|---|---|")
    labels = {"bare": "bare Starlette", "memory": "mockserver, memory://", "redis": "mockserver, redis://"}
    for name, value in results.items():
        print(f"| {labels[name]} | {value:,.0f} | {results['bare'] / value:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
