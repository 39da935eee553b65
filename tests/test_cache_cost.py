"""Prompt caching by speed, and what fast mode costs: the official SDK against a fake-clock server."""

from __future__ import annotations

import anthropic
import pytest

from mockserver.admin_client import AdminClient
from mockserver.clock import FakeClock
from mockserver.tokens import count_input

FAST_BETA = "fast-mode-2026-02-01"
LONG = "The quick brown fox jumps over the lazy dog. " * 300  # ~2,700 tokens: above the 1,024 minimum
SYSTEM = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
SYSTEM_1H = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
QUESTION = [{"role": "user", "content": "Summarise."}]
PREFIX_TOKENS = count_input(system=[{"type": "text", "text": LONG}], messages=[])


@pytest.fixture
def setup(start_server):
    clock = FakeClock()
    server = start_server(clock=clock, timing={"time_scale": 1000.0, "pace_non_streaming": False})
    client = anthropic.Anthropic(api_key="sk-cache", base_url=server.url, max_retries=0)
    with AdminClient(server.url) as admin:
        yield client, clock, admin


def ask(client, speed=None, system=SYSTEM, **kwargs):
    extra = {"speed": speed} if speed else {}
    return client.beta.messages.create(
        model="claude-opus-4-7",
        max_tokens=50,
        system=system,
        messages=QUESTION,
        betas=[FAST_BETA],
        **extra,
        **kwargs,
    )


def test_write_then_read(setup):
    client, _, _ = setup
    first, second = ask(client), ask(client)
    total = client.messages.count_tokens(
        model="claude-opus-4-7", system=SYSTEM, messages=QUESTION
    ).input_tokens
    assert (
        first.usage.cache_creation_input_tokens == PREFIX_TOKENS and first.usage.cache_read_input_tokens == 0
    )
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == PREFIX_TOKENS
    assert (
        second.usage.cache_read_input_tokens == PREFIX_TOKENS
        and second.usage.cache_creation_input_tokens == 0
    )
    # input + creation + read is the whole prompt, as the SDK docstring says.
    for message in (first, second):
        usage = message.usage
        assert usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens == total


def test_switching_speed_misses_and_diagnostics_say_why(setup):
    client, _, _ = setup
    standard = ask(client)
    fast = ask(client, speed="fast", diagnostics={"previous_message_id": standard.id})
    assert fast.usage.speed == "fast"
    assert fast.usage.cache_read_input_tokens == 0 and fast.usage.cache_creation_input_tokens == PREFIX_TOKENS
    reason = fast.diagnostics.cache_miss_reason
    assert reason.type == "model_changed" and reason.cache_missed_input_tokens == PREFIX_TOKENS
    # Back at standard speed the standard entry is still warm.
    assert ask(client).usage.cache_read_input_tokens == PREFIX_TOKENS


def test_other_diagnoses(setup):
    client, _, _ = setup
    first = ask(client)
    changed = [{"type": "text", "text": LONG + " More.", "cache_control": {"type": "ephemeral"}}]
    assert (
        ask(
            client, system=changed, diagnostics={"previous_message_id": first.id}
        ).diagnostics.cache_miss_reason.type
        == "system_changed"
    )
    unknown = ask(client, diagnostics={"previous_message_id": "msg_01NoSuchMessage"})
    assert unknown.diagnostics.cache_miss_reason.type == "previous_message_not_found"
    same = ask(client, diagnostics={"previous_message_id": first.id})
    assert same.diagnostics is None and same.usage.cache_read_input_tokens == PREFIX_TOKENS


def test_five_minute_ttl_expires_on_the_fake_clock_and_hits_refresh_it(setup):
    client, clock, _ = setup
    ask(client)
    clock.advance(299)
    assert ask(client).usage.cache_read_input_tokens == PREFIX_TOKENS  # refreshed at t=299
    clock.advance(299)
    assert ask(client).usage.cache_read_input_tokens == PREFIX_TOKENS  # t=598: alive thanks to the refresh
    clock.advance(301)
    expired = ask(client)
    assert (
        expired.usage.cache_read_input_tokens == 0
        and expired.usage.cache_creation_input_tokens == PREFIX_TOKENS
    )


def test_one_hour_ttl(setup):
    client, clock, _ = setup
    first = ask(client, system=SYSTEM_1H)
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == PREFIX_TOKENS
    clock.advance(3000)
    assert ask(client, system=SYSTEM_1H).usage.cache_read_input_tokens == PREFIX_TOKENS
    clock.advance(3601)
    assert ask(client, system=SYSTEM_1H).usage.cache_read_input_tokens == 0


def test_short_prefixes_are_not_cached(setup):
    client, _, _ = setup
    short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        usage = ask(client, system=short).usage
        assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0


def test_cache_reads_do_not_count_towards_fast_input_limits(start_server):
    server = start_server(
        clock=FakeClock(), timing={"time_scale": 1000.0, "pace_non_streaming": False},
        limits={"fast_input_tokens_per_minute": 100_000},
    )  # fmt: skip
    client = anthropic.Anthropic(api_key="sk-itpm", base_url=server.url, max_retries=0)

    def remaining():
        raw = client.beta.messages.with_raw_response.create(
            model="claude-opus-4-7",
            max_tokens=5,
            speed="fast",
            system=SYSTEM,
            messages=QUESTION,
            betas=[FAST_BETA],
        )
        return int(raw.headers["anthropic-fast-input-tokens-remaining"]), raw.parse().usage

    first_left, first = remaining()
    second_left, second = remaining()
    assert first_left == 100_000 - (first.input_tokens + first.cache_creation_input_tokens)
    assert first_left - second_left == second.input_tokens  # the cached prefix was not charged again


def test_cost_matches_the_seed_prices(setup):
    client, _, admin = setup
    fast = ask(client, speed="fast")  # writes the cache at fast speed
    standard = client.messages.create(model="claude-opus-4-7", max_tokens=40, messages=QUESTION)
    rows = admin.requests(status=200)
    # By hand: fast Opus is $30 / MTok in and $150 / MTok out (6x the standard $5 / $25); a 5-minute
    # cache write costs 1.25x the input rate.
    u = fast.usage
    expected_fast = (
        u.input_tokens * 30 + u.cache_creation_input_tokens * 30 * 1.25 + u.output_tokens * 150
    ) / 1e6
    expected_standard = (standard.usage.input_tokens * 5 + standard.usage.output_tokens * 25) / 1e6
    assert rows[0]["cost_usd"] == pytest.approx(expected_fast)
    assert rows[1]["cost_usd"] == pytest.approx(expected_standard)
    read = ask(client, speed="fast").usage
    expected_read = (
        read.input_tokens * 30 + read.cache_read_input_tokens * 30 * 0.1 + read.output_tokens * 150
    ) / 1e6
    report = admin.usage()
    by_speed = {row["speed"]: row for row in report["data"]}
    assert by_speed["fast"]["requests"] == 2
    assert by_speed["fast"]["cost_usd"] == pytest.approx(expected_fast + expected_read, abs=1e-6)
    assert by_speed["standard"]["cost_usd"] == pytest.approx(expected_standard, abs=1e-6)
    assert by_speed["fast"]["cache_read_input_tokens"] == PREFIX_TOKENS
    assert report["total_cost_usd"] == pytest.approx(
        expected_fast + expected_read + expected_standard, abs=1e-5
    )
    assert admin.usage(since=rows[0]["started_at"] + 1)["data"] == []  # the fake clock never moved


def test_cache_entries_live_in_redis_and_are_shared_by_servers(start_server):
    import uuid

    from tests.support.redis_server import RedisServer, redis_server_binary

    with RedisServer(redis_server_binary()) as redis:
        clock = FakeClock()
        shared = {
            "storage": redis.url,
            "key_prefix": f"cache-{uuid.uuid4().hex}:",
            "timing": {"time_scale": 1000.0, "pace_non_streaming": False},
        }
        first_server, second_server = start_server(clock=clock, **shared), start_server(clock=clock, **shared)
        first = ask(anthropic.Anthropic(api_key="sk-c", base_url=first_server.url, max_retries=0))
        second = ask(anthropic.Anthropic(api_key="sk-c", base_url=second_server.url, max_retries=0))
        assert first.usage.cache_creation_input_tokens == PREFIX_TOKENS
        assert second.usage.cache_read_input_tokens == PREFIX_TOKENS  # written by the other server
        clock.advance(301)
        third = ask(anthropic.Anthropic(api_key="sk-c", base_url=second_server.url, max_retries=0))
        assert third.usage.cache_read_input_tokens == 0  # expired on the fake clock, in Redis too


def test_a_ledger_row_of_unknown_cost_is_counted_not_a_500(start_server):
    # Before prices were bounded, a price of 1e308 made a reply's cost inf, which Redis's JSON stored
    # as null; GET /_admin/usage then answered 500 (float += None) until a reset. A Redis ledger
    # outlives the server that wrote it, so such a row is put there as that server did.
    import asyncio
    import uuid

    from mockserver import usage
    from mockserver.state.redis import RedisStateStore
    from tests.support.redis_server import RedisServer, redis_server_binary

    with RedisServer(redis_server_binary()) as redis:
        prefix = f"usage-{uuid.uuid4().hex}:"
        timing = {"time_scale": 1000.0, "pace_non_streaming": False}
        server = start_server(clock=FakeClock(), timing=timing, storage=redis.url, key_prefix=prefix)
        client = anthropic.Anthropic(api_key="sk-u", base_url=server.url, max_retries=0)
        reply = client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=QUESTION)
        with AdminClient(server.url) as admin:
            (row,) = admin.requests(status=200)

            async def write_unknown_cost_row() -> None:
                store = RedisStateStore(redis.url, key_prefix=prefix)
                old = (row["started_at"], row["organization"], row["model"], row["speed"], 7, 3, 0, 0, None)
                await store.append(usage.LEDGER_KEY, old, max_len=usage.MAX_ROWS)
                await store.close()

            asyncio.run(write_unknown_cost_row())
            report = admin.usage()
    (group,) = report["data"]
    assert group["requests"] == 2 and group["unknown_cost_requests"] == 1
    assert group["input_tokens"] == reply.usage.input_tokens + 7
    assert group["cost_usd"] == pytest.approx(row["cost_usd"], abs=1e-6)  # the known row's cost only
    assert report["total_cost_usd"] == group["cost_usd"] and report["unknown_cost_requests"] == 1
