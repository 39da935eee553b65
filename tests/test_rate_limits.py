"""Rate limits end to end: the official SDK against servers with memory and Redis stores."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient
from mockserver.clock import FakeClock
from mockserver.tokens import count_input
from tests.support.redis_server import RedisServer, redis_server_fixture

FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]
FAST_HEADERS = [
    f"anthropic-fast-{kind}-tokens-{part}"
    for kind in ("input", "output")
    for part in ("limit", "remaining", "reset")
]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

redis_server = redis_server_fixture(scope="module")


def fake_clock_server(start_server, **overrides):
    clock = FakeClock()
    timing = {"time_scale": 1000.0, "pace_non_streaming": False}
    return start_server(clock=clock, timing=timing, **overrides), clock


def sdk(server, key="sk-org-1"):
    return anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0)


def fast(client, max_tokens=100, **kwargs):
    return client.beta.messages.create(
        model="claude-opus-4-7",
        max_tokens=max_tokens,
        speed="fast",
        betas=[FAST_BETA],
        messages=HELLO,
        **kwargs,
    )


def test_fast_responses_carry_the_fast_headers(start_server):
    server, _ = fake_clock_server(start_server, limits={"fast_output_tokens_per_minute": 6000})
    raw = sdk(server).beta.messages.with_raw_response.create(
        model="claude-opus-4-7", max_tokens=100, speed="fast", betas=[FAST_BETA], messages=HELLO
    )
    assert raw.parse().usage.speed == "fast"
    for name in FAST_HEADERS:
        assert name in raw.headers
    assert raw.headers["anthropic-fast-output-tokens-limit"] == "6000"
    assert int(raw.headers["anthropic-fast-output-tokens-remaining"]) == 6000 - 100  # max_tokens reserved
    assert RFC3339.match(raw.headers["anthropic-fast-output-tokens-reset"])
    assert not any(h.startswith("anthropic-ratelimit-") for h in raw.headers)


def test_standard_responses_carry_the_standard_headers(start_server):
    server, _ = fake_clock_server(start_server, limits={"requests_per_minute": 50})
    raw = sdk(server).messages.with_raw_response.create(
        model="claude-opus-4-7", max_tokens=10, messages=HELLO
    )
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "50"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "49"
    for family in ("requests", "input-tokens", "output-tokens", "tokens"):
        assert RFC3339.match(raw.headers[f"anthropic-ratelimit-{family}-reset"])
    assert not any(h.startswith("anthropic-fast-") for h in raw.headers)


def test_burst_until_429_then_retry_after_is_exactly_enough(start_server):
    server, clock = fake_clock_server(start_server, limits={"fast_output_tokens_per_minute": 600})
    client = sdk(server)
    with pytest.raises(anthropic.RateLimitError) as caught:
        for _ in range(20):
            fast(client, max_tokens=200)
    error = caught.value
    assert error.type == "rate_limit_error"
    assert "fast mode output tokens per minute" in error.api_message
    headers = error.response.headers
    for name in FAST_HEADERS:
        assert name in headers
    assert headers["x-should-retry"] == "true"
    retry_after = int(headers["retry-after"])
    assert retry_after >= 1
    # Not a second early ...
    clock.advance(retry_after - 1)
    with pytest.raises(anthropic.RateLimitError):
        fast(client, max_tokens=200)
    # ... and enough after exactly retry-after seconds (the failed attempt charged nothing).
    clock.advance(1)
    assert fast(client, max_tokens=200).usage.speed == "fast"


def test_standard_keeps_working_while_fast_is_exhausted_and_fallback_pattern(start_server):
    server, _ = fake_clock_server(start_server, limits={"fast_input_tokens_per_minute": 30})
    client = sdk(server)
    with pytest.raises(anthropic.RateLimitError):
        for _ in range(20):
            fast(client)
    # The seed's pattern: on RateLimitError resend without speed.
    try:
        message = fast(client)
    except anthropic.RateLimitError:
        message = client.beta.messages.create(
            model="claude-opus-4-7", max_tokens=100, betas=[FAST_BETA], messages=HELLO
        )
    assert message.usage.speed == "standard"


def test_unused_output_reservation_is_refunded(start_server):
    server, _ = fake_clock_server(start_server, limits={"fast_output_tokens_per_minute": 1000})
    client = sdk(server)
    first = client.beta.messages.with_raw_response.create(
        model="claude-opus-4-7", max_tokens=500, speed="fast", betas=[FAST_BETA], messages=HELLO
    )
    used = first.parse().usage.output_tokens
    assert used < 500
    second = client.beta.messages.with_raw_response.create(
        model="claude-opus-4-7", max_tokens=1, speed="fast", betas=[FAST_BETA], messages=HELLO
    )
    # After the first reply settled, only what it produced stays charged (plus the new reservation).
    assert int(second.headers["anthropic-fast-output-tokens-remaining"]) == 1000 - used - 1


def test_a_request_that_can_never_fit_says_so(start_server):
    server, _ = fake_clock_server(start_server, limits={"fast_output_tokens_per_minute": 1000})
    with pytest.raises(anthropic.RateLimitError) as caught:
        fast(sdk(server), max_tokens=5000)
    assert "can never be admitted" in caught.value.api_message
    assert "retry-after" not in caught.value.response.headers
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_keys_of_one_organisation_share_limits_and_others_do_not(start_server):
    orgs = {"acme": {"keys": ["sk-a1", "sk-a2"], "fast_output_tokens_per_minute": 300}}
    server, _ = fake_clock_server(
        start_server, organizations=orgs, limits={"fast_output_tokens_per_minute": 300}
    )
    fast(sdk(server, "sk-a1"), max_tokens=300)
    with pytest.raises(anthropic.RateLimitError):
        fast(sdk(server, "sk-a2"), max_tokens=300)
    assert fast(sdk(server, "sk-other"), max_tokens=300).usage.speed == "fast"


def test_an_organisation_can_be_denied_fast_mode(start_server):
    server, _ = fake_clock_server(
        start_server, organizations={"nowait": {"keys": ["sk-n"], "fast_mode": False}}
    )
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        fast(sdk(server, "sk-n"))
    assert "waitlist" in caught.value.api_message
    assert sdk(server, "sk-n").messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)


def test_sdk_retries_wait_for_retry_after(start_server):
    # A real limit that refills 100 tokens a second: the second request waits a second or two.
    server = start_server(limits={"fast_output_tokens_per_minute": 6000})
    client = anthropic.Anthropic(api_key="sk-r", base_url=server.url, max_retries=2)
    first = fast(client, max_tokens=6000)  # reserves the whole bucket, then keeps what it produced
    message = fast(client, max_tokens=6000)  # 429 first; the SDK waits retry-after, then succeeds
    assert message.usage.speed == "fast"
    with AdminClient(server.url) as admin:
        attempts = admin.requests(speed="fast")
    assert [row["status"] for row in attempts] == [200, 429, 200]
    assert [row["retry_count"] for row in attempts] == [0, 0, 1]
    waited = attempts[2]["started_at"] - attempts[1]["started_at"]
    assert waited >= first.usage.output_tokens / 100 - 0.05  # no sooner than the deficit allows


def test_redis_store_outage_is_a_clear_5xx_and_recovers(start_server, redis_server: RedisServer):
    server = start_server(storage=redis_server.url, key_prefix=f"t-{uuid.uuid4().hex}:")
    client = sdk(server)
    assert fast(client, max_tokens=10).usage.speed == "fast"
    redis_server.stop()
    try:
        with pytest.raises(anthropic.InternalServerError) as caught:
            fast(client, max_tokens=10)
        assert caught.value.status_code == 503 and caught.value.type == "api_error"
        assert "unavailable" in caught.value.api_message
    finally:
        redis_server.start()
    assert fast(client, max_tokens=10).usage.speed == "fast"


@pytest.mark.parametrize("speed", ["standard", "fast"])
def test_two_server_processes_sharing_redis_admit_one_limit(redis_server: RedisServer, speed):
    prefix = f"shared-{uuid.uuid4().hex}:"
    limits = (
        {"MOCKSERVER_LIMITS__REQUESTS_PER_MINUTE": "10"}
        if speed == "standard"
        else {"MOCKSERVER_LIMITS__FAST_INPUT_TOKENS_PER_MINUTE": "100"}
    )
    env = {"PATH": "/usr/bin:/bin", "MOCKSERVER_TIMING__PACE_NON_STREAMING": "false", **limits}
    processes, urls = [], []
    try:
        for _ in range(2):
            command = [
                sys.executable,
                "-m",
                "mockserver",
                "serve",
                "--port",
                "0",
                "--storage",
                redis_server.url,
            ]
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, text=True, env={**env, "MOCKSERVER_KEY_PREFIX": prefix}
            )
            processes.append(process)
            urls.append(process.stdout.readline().split()[-1])
        body = {"model": "claude-opus-4-7", "max_tokens": 5, "messages": HELLO}
        headers = {"x-api-key": "sk-shared", "anthropic-version": "2023-06-01", "anthropic-beta": FAST_BETA}
        if speed == "fast":
            body["speed"] = "fast"
        started = time.monotonic()
        statuses = [
            httpx.post(f"{urls[i % 2]}/v1/messages", json=body, headers=headers).status_code
            for i in range(30)
        ]
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    admitted = statuses.count(200)
    assert set(statuses) == {200, 429}
    # One limit's worth up front, plus what refilled while the burst ran; never one limit per process.
    per_request, limit = (1, 10) if speed == "standard" else (count_input(messages=HELLO), 100)
    allowed = (limit + limit / 60 * elapsed) / per_request
    assert limit // per_request <= admitted <= allowed + 1e-9


def test_memory_buckets_of_idle_keys_are_forgotten_once_full(start_server):
    """A bucket per API key used to be kept forever (~1.2 KB each); one that has refilled is dropped,
    while a key still inside its limit keeps its level and its exact retry-after."""
    server, clock = fake_clock_server(start_server, limits={"requests_per_minute": 3})
    buckets = server.state.buckets._states
    for n in range(200):
        sdk(server, f"sk-idle-{n}").messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    kept = len(buckets)
    assert kept >= 200  # a few buckets per organisation
    active = sdk(server, "sk-active")
    clock.advance(61)  # every idle bucket has refilled (a minute refills a whole limit)
    for _ in range(3):
        active.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    assert len(buckets) < kept / 50  # only the active organisation's are left
    with pytest.raises(anthropic.RateLimitError) as caught:
        active.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "20"  # one request refills in 20 s
    clock.advance(20)
    assert active.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
