"""`mockserver.testing`: the journal assertions, on made-up rows and against the SDK's real retries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mockserver.testing import (
    assert_fast,
    assert_fell_back,
    assert_no_speed,
    assert_retries_respect_retry_after,
    retries,
)

FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]


def row(started_at, status=200, speed="standard", key="key_a", **extra):
    base = {
        "request_id": f"req_{started_at}",
        "path": "/v1/messages",
        "model": "claude-opus-4-7",
        "api_key_id": key,
        "speed": speed,
        "betas": [FAST_BETA] if speed == "fast" else [],
        "stream": False,
        "status": status,
        "retry_count": 0,
        "started_at": started_at,
    }
    return {**base, **extra}


def test_assert_fast_wants_speed_and_the_beta_header():
    assert_fast(row(0, speed="fast"))
    with pytest.raises(AssertionError, match="expected a speed=fast request, got speed='standard'"):
        assert_fast(row(0))
    with pytest.raises(AssertionError, match=f"without the {FAST_BETA} beta header"):
        assert_fast(row(0, speed="fast", betas=[]))
    assert_fast(row(0, speed="fast", betas=[]), beta=None)


def test_assert_no_speed_prefers_the_requested_speed_when_recorded():
    assert_no_speed(row(0))
    with pytest.raises(AssertionError, match="got speed='fast'"):
        assert_no_speed(row(0, speed="fast"))
    with pytest.raises(AssertionError, match="expected no speed, got speed='standard'"):
        assert_no_speed(row(0, requested_speed="standard"))
    assert_no_speed(row(0, requested_speed=None))


def test_assert_fell_back_finds_the_fast_429_and_the_standard_answer():
    rows = [row(2.0), row(1.0, status=429, speed="fast"), row(0.0, speed="fast"), row(1.5, key="other")]
    rejected, fallback = assert_fell_back(rows)
    assert (rejected["started_at"], fallback["started_at"]) == (1.0, 2.0)
    with pytest.raises(AssertionError, match="no rate-limited fast request followed by"):
        assert_fell_back([row(0.0, speed="fast"), row(1.0)])
    with pytest.raises(AssertionError):  # another caller's request is not this caller's fallback
        assert_fell_back([row(0.0, status=429, speed="fast"), row(1.0, key="other")])


def test_retries_pair_each_429_with_the_next_attempt_at_the_same_request():
    rows = [
        row(0.0, status=429, speed="fast", retry_after=2),
        row(0.1),  # the standard fallback is not a retry of the fast request
        row(2.5, speed="fast", retry_count=1),
        row(3.0, status=429, key="other", retry_after=1),  # never retried
    ]
    [(rejected, retry)] = retries(rows)
    assert (rejected["started_at"], retry["started_at"]) == (0.0, 2.5)
    [checked] = assert_retries_respect_retry_after(rows)
    assert (checked.waited, checked.retry_after) == (2.5, 2)


def test_a_retry_sooner_than_retry_after_fails_and_says_when():
    rows = [row(0.0, status=429, retry_after=3), row(1.0, retry_count=1)]
    with pytest.raises(AssertionError, match=r"retried 1\.000 s after a 429 that said retry-after 3"):
        assert_retries_respect_retry_after(rows)
    assert_retries_respect_retry_after(rows, retry_after=1)  # an explicit value wins


def test_retry_after_must_be_known_and_a_retry_must_exist():
    with pytest.raises(AssertionError, match="does not record retry-after; pass retry_after="):
        assert_retries_respect_retry_after([row(0.0, status=429), row(1.0)])
    with pytest.raises(AssertionError, match="expected at least 1 retry after a 429, found 0"):
        assert_retries_respect_retry_after([row(0.0)])
    assert assert_retries_respect_retry_after([row(0.0)], min_retries=0) == []


@pytest.mark.mockserver(limits={"fast_output_tokens_per_minute": 6000})
def test_the_sdk_waits_for_retry_after(mockserver):
    # Used straight from this repo's run: the plugin is registered here too. The limit refills 100
    # tokens a second, so the SDK's retry waits a second or two.
    client = mockserver.anthropic_client()
    assert client.max_retries == 2  # the SDK's default, kept
    for _ in range(2):  # the first reserves the whole bucket; the second gets a 429, then succeeds
        client.beta.messages.create(
            model="claude-opus-4-7", max_tokens=6000, speed="fast", betas=[FAST_BETA], messages=HELLO
        )
    rows = mockserver.requests(speed="fast")
    assert [(r["status"], r["retry_count"]) for r in rows] == [(200, 0), (429, 0), (200, 1)]
    for r in rows:
        mockserver.assert_fast(r)
    # Every retry-after is at least a second; the journal carries the exact value once it records it.
    [checked] = mockserver.assert_retries_respect_retry_after(
        retry_after=None if "retry_after" in rows[1] else 1, speed="fast"
    )
    assert checked.retry["retry_count"] == 1


def test_the_plugin_imports_only_pytest_and_the_standard_library():
    code = (
        "import sys, mockserver.pytest_plugin\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'anthropic', 'uvicorn', 'starlette', 'httpx')]\n"
        "ours = [m for m in sys.modules if m.startswith('mockserver')]\n"
        "print(heavy, sorted(ours))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] ['mockserver', 'mockserver.pytest_plugin']"
