from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mockserver.limits import Draw, LimitTable, decide, draws_for, output_draw
from mockserver.limits.policy import (
    limit_name,
    rate_limit_headers,
    rejection_message,
    retry_after_header,
    rfc3339,
)

# 2026-11-25T12:00:00Z
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC).timestamp()
LIMITS = LimitTable(
    requests_per_minute=1000,
    input_tokens_per_minute=80_000,
    output_tokens_per_minute=16_000,
    fast_input_tokens_per_minute=200_000,
    fast_output_tokens_per_minute=40_000,
)


def test_standard_draws():
    draws = draws_for("org_1", "standard", "opus", LIMITS, input_tokens=1200, max_tokens=512)
    assert draws == [
        Draw("org_1:opus:standard:rpm", 1000.0, 1.0, 1000 / 60),
        Draw("org_1:opus:standard:itpm", 80_000.0, 1200.0, 80_000 / 60),
        Draw("org_1:opus:standard:otpm", 16_000.0, 512.0, 16_000 / 60),
    ]


def test_fast_draws_use_their_own_pool():
    draws = draws_for("org_1", "fast", "opus", LIMITS, input_tokens=1200, max_tokens=512)
    assert draws == [
        Draw("org_1:opus:fast:itpm", 200_000.0, 1200.0, 200_000 / 60),
        Draw("org_1:opus:fast:otpm", 40_000.0, 512.0, 40_000 / 60),
    ]
    standard = {d.key for d in draws_for("org_1", "standard", "opus", LIMITS, 1200, 512)}
    assert standard.isdisjoint(d.key for d in draws)


def test_output_draw_matches_the_charged_bucket():
    for speed in ("standard", "fast"):
        charged = draws_for("o", speed, "opus", LIMITS, 10, 700)[-1]
        assert output_draw("o", speed, "opus", LIMITS, 700) == charged
        assert output_draw("o", speed, "opus", LIMITS).cost == 0.0


def test_default_limits():
    assert LimitTable() == LimitTable(4000, 2_000_000, 400_000, 1_000_000, 200_000)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("org:opus:fast:otpm", "fast mode output tokens per minute"),
        ("org:opus:fast:itpm", "fast mode input tokens per minute"),
        ("org:opus:standard:rpm", "requests per minute"),
        ("org:opus:standard:itpm", "input tokens per minute"),
        ("org:with:colons:opus:standard:otpm", "output tokens per minute"),
    ],
)
def test_limit_name(key, name):
    assert limit_name(key) == name


def test_limit_name_rejects_foreign_keys():
    with pytest.raises(ValueError, match="not a rate-limit bucket key"):
        limit_name("whatever")


def test_fast_headers_exact():
    draws = draws_for("o", "fast", "opus", LIMITS, input_tokens=50_000, max_tokens=40_000)
    admission, _ = decide(draws, {}, NOW)
    assert admission.admitted
    headers = rate_limit_headers("fast", LIMITS, admission.levels, draws, NOW)
    assert headers == {
        "anthropic-fast-input-tokens-limit": "200000",
        "anthropic-fast-input-tokens-remaining": "150000",
        # 50,000 tokens at 200,000/min refill in 15 s.
        "anthropic-fast-input-tokens-reset": "2026-11-25T12:00:15Z",
        "anthropic-fast-output-tokens-limit": "40000",
        "anthropic-fast-output-tokens-remaining": "0",
        "anthropic-fast-output-tokens-reset": "2026-11-25T12:01:00Z",
    }


def test_standard_headers_full_buckets_match_the_reference_example():
    draws = draws_for("o", "standard", "opus", LIMITS, 0, 0)
    levels = {d.key: d.capacity for d in draws}
    headers = rate_limit_headers("standard", LIMITS, levels, draws, NOW)
    stamp = "2026-11-25T12:00:00Z"
    assert headers == {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "1000",
        "anthropic-ratelimit-requests-reset": stamp,
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "80000",
        "anthropic-ratelimit-input-tokens-reset": stamp,
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
        "anthropic-ratelimit-output-tokens-reset": stamp,
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
        "anthropic-ratelimit-tokens-reset": stamp,
    }


def test_combined_tokens_follow_the_more_restrictive_limit():
    draws = draws_for("o", "standard", "opus", LIMITS, input_tokens=8_000, max_tokens=12_000)
    admission, _ = decide(draws, {}, NOW)
    headers = rate_limit_headers("standard", LIMITS, admission.levels, draws, NOW)
    assert headers["anthropic-ratelimit-requests-remaining"] == "999"
    assert headers["anthropic-ratelimit-requests-reset"] == "2026-11-25T12:00:01Z"  # 0.06 s, rounded up
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "72000"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "4000"
    # Output is at 25 %, input at 90 %: the combined figures follow output.
    assert headers["anthropic-ratelimit-tokens-limit"] == "96000"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "24000"
    assert headers["anthropic-ratelimit-tokens-reset"] == headers["anthropic-ratelimit-output-tokens-reset"]
    assert headers["anthropic-ratelimit-output-tokens-reset"] == "2026-11-25T12:00:45Z"


def test_remaining_is_floored_and_never_negative():
    draws = draws_for("o", "fast", "opus", LIMITS, 10, 10)
    levels = {draws[0].key: 1234.9, draws[1].key: -500.0}
    headers = rate_limit_headers("fast", LIMITS, levels, draws, NOW)
    assert headers["anthropic-fast-input-tokens-remaining"] == "1234"
    assert headers["anthropic-fast-output-tokens-remaining"] == "0"
    # -500 in debt: 40,500 tokens to refill at 40,000/min.
    assert headers["anthropic-fast-output-tokens-reset"] == "2026-11-25T12:01:01Z"


def test_remaining_ignores_float_noise():
    draws = draws_for("o", "fast", "opus", LIMITS, 10, 10)
    levels = {draws[0].key: 59.999999999997, draws[1].key: 40_000.0}
    assert (
        rate_limit_headers("fast", LIMITS, levels, draws, NOW)["anthropic-fast-input-tokens-remaining"]
        == "60"
    )


def test_missing_buckets_are_reported_full():
    headers = rate_limit_headers("fast", LIMITS, {}, [], NOW)
    assert headers["anthropic-fast-output-tokens-remaining"] == "40000"
    assert headers["anthropic-fast-output-tokens-reset"] == "2026-11-25T12:00:00Z"


def test_rfc3339():
    assert rfc3339(NOW) == "2026-11-25T12:00:00Z"
    assert rfc3339(NOW + 0.001) == "2026-11-25T12:00:01Z"


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.0, "1"), (0.0001, "1"), (1.0, "1"), (1.2, "2"), (59.01, "60"), (125.0, "125"), (float("inf"), "60")],
)
def test_retry_after_header(seconds, header):
    assert retry_after_header(seconds) == header


@given(st.floats(0, 1e6))
def test_retry_after_header_is_a_safe_whole_number(seconds):
    value = int(retry_after_header(seconds))
    assert value >= 1
    assert seconds <= value < max(seconds, 1) + 1


def test_fast_rejection_message_names_the_limit_and_the_fallback():
    message = rejection_message("o:opus:fast:otpm", 200_000, never_fits=False, cost=4096)
    assert message == (
        "This request would exceed your organization's rate limit of 200,000 fast mode output tokens per "
        'minute. Retry after the delay in the retry-after header, or send the request without speed="fast" '
        "to fall back to standard speed."
    )


def test_standard_rejection_message():
    message = rejection_message("o:opus:standard:rpm", 4000, never_fits=False, cost=1)
    assert message == (
        "This request would exceed your organization's rate limit of 4,000 requests per minute. "
        "Retry after the delay in the retry-after header."
    )
    assert "speed" not in message


def test_never_fits_messages():
    fast = rejection_message("o:opus:fast:otpm", 40_000, never_fits=True, cost=64_000)
    assert "64,000 fast mode output tokens" in fast
    assert "40,000 fast mode output tokens per minute" in fast
    assert "can never be admitted" in fast and "max_tokens" in fast and 'speed="fast"' in fast
    standard = rejection_message("o:opus:standard:itpm", 80_000, never_fits=True, cost=100_000)
    assert "100,000 input tokens" in standard and "80,000 input tokens per minute" in standard
    assert "shorten the prompt" in standard and "speed" not in standard
