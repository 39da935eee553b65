"""What each chaos fault raises in the installed `anthropic` SDK: prints a markdown table.

The table in docs/chaos.md names the exception per SDK; this is how those names were read. Run it in a
virtualenv with mockserver and the SDK version to check (any 0.x, 1.x or 2.x):

    python -m venv /tmp/sdk0 && /tmp/sdk0/bin/pip install -e . 'anthropic==0.121.0'
    /tmp/sdk0/bin/python scripts/sdk_exceptions.py

Each fault is sent once, in the `x-mockserver-fault` header, with retries off (`max_retries=0`),
so what is printed is what the caller's code sees when the SDK gives up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic

from mockserver.server import MockServer
from mockserver.settings import Settings

PROMPT = [{"role": "user", "content": "Tell me a story"}]
FAST = {"speed": "fast", "betas": ["fast-mode-2026-02-01"]}
READ_TIMEOUT = 0.5  # seconds: the client's timeout, which a stall or a latency fault outlasts

# (fault, streamed?, fast?)
CASES: list[tuple[dict[str, Any], bool, bool]] = [
    ({"kind": "http_error", "status": 400}, False, False),
    ({"kind": "http_error", "status": 402}, False, False),
    ({"kind": "http_error", "status": 429}, False, False),
    ({"kind": "http_error", "status": 500}, False, False),
    ({"kind": "http_error", "status": 503}, False, False),
    ({"kind": "http_error", "status": 504}, False, False),
    ({"kind": "http_error", "status": 529}, False, False),
    ({"kind": "latency", "latency_seconds": 2}, False, False),
    ({"kind": "reset"}, False, False),
    ({"kind": "degrade_speed"}, False, True),
    ({"kind": "fast_outage"}, False, True),
    ({"kind": "stall", "after_tokens": 3, "stall_seconds": 2}, True, False),
    ({"kind": "stream_error", "after_tokens": 3}, True, False),
    ({"kind": "stream_reset", "after_tokens": 3}, True, False),
    ({"kind": "truncate", "after_tokens": 3}, True, False),
    ({"kind": "malformed", "after_tokens": 3}, True, False),
]


def outcome(call: Callable[[], Any]) -> str:
    try:
        result = call()
    except Exception as exc:  # what the caller sees is the point
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return f"`{name.replace('anthropic._exceptions.', 'anthropic.')}`"
    return f"no exception ({result})"


def request(
    client: anthropic.Anthropic, fault: dict[str, Any], streamed: bool, fast: bool
) -> Callable[[], Any]:
    options: dict[str, Any] = {
        "model": "claude-opus-4-7",
        "max_tokens": 64,
        "messages": PROMPT,
        "extra_headers": {"x-mockserver-fault": json.dumps(fault)},
    }
    messages = client.beta.messages if fast else client.messages
    if fast:
        options.update(FAST)

    def call() -> str:
        if not streamed:
            return f"status 200, usage.speed {messages.create(**options).usage.speed}"
        with messages.stream(**options) as stream:
            message = stream.get_final_message()
        return f"`get_final_message().stop_reason` is {message.stop_reason!r}"

    return call


def main() -> None:
    settings = Settings(port=0, timing={"time_scale": 100.0}, chaos={"allow_degraded_speed": True})
    with MockServer(settings) as server:
        client = anthropic.Anthropic(api_key="test", base_url=server.url, max_retries=0, timeout=READ_TIMEOUT)
        print(f"anthropic {anthropic.__version__}\n")
        print("| fault | raises |")
        print("|---|---|")
        for fault, streamed, fast in CASES:
            shown = ", ".join(f"{k}={v}" for k, v in fault.items() if k != "kind")
            name = f"`{fault['kind']}`" + (f" ({shown})" if shown else "")
            name += " in a stream" if streamed else ""
            print(f"| {name} | {outcome(request(client, fault, streamed, fast))} |")


if __name__ == "__main__":
    main()
