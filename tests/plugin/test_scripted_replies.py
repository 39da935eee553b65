"""Scripted replies from a downstream test's point of view: the `mockserver` fixture, the SDK, the journal."""

from __future__ import annotations

import concurrent.futures

import anthropic
import pytest

from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

FAST_BETA = "fast-mode-2026-02-01"
MODEL = "claude-opus-4-7"
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

pytest_plugins = ["pytester"]

redis_server = redis_server_fixture(scope="module")


def ask(client, content="Hello", **extra):
    return client.messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": content}], **extra
    )


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_a_429_then_a_reply_is_retried_by_the_sdk(mockserver, anthropic_client):
    mockserver.reply_sequence(
        [{"error": 429, "headers": {"retry-after-ms": "50"}}, "Fine, on the second try."]
    )
    message = ask(anthropic_client)  # the SDK's own retry (max_retries 2) gets past the 429
    assert text_of(message) == "Fine, on the second try."
    rows = mockserver.assert_requests(count=2, scripted=True)
    assert [(row["status"], row["error_type"], row["retry_count"]) for row in rows] == [
        (429, "rate_limit_error", 0),
        (200, None, 1),
    ]
    assert [entry["remaining"] for entry in mockserver.scripted_replies()] == [0, 0]
    generated = ask(anthropic_client)  # the script is used up: back to generated replies
    assert text_of(generated) != "Fine, on the second try."
    mockserver.assert_requests(count=1, scripted=False)


def test_a_scripted_error_is_the_api_envelope(mockserver, anthropic_client):
    mockserver.reply(error=529, message="Busy, try later", headers={"x-should-retry": "false"})
    with pytest.raises(anthropic.APIStatusError) as caught:
        ask(anthropic_client)
    error = caught.value
    assert error.status_code == 529
    assert error.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Busy, try later"},
        "request_id": error.response.headers["request-id"],
    }
    mockserver.assert_requests(count=1, status=529)  # x-should-retry: false: the SDK did not retry


def test_canned_text_with_usage_and_recorded_body(mockserver, anthropic_client):
    mockserver.reply("The capital of France is Paris.")
    message = ask(anthropic_client, "What is the capital of France?")
    assert text_of(message) == "The capital of France is Paris."
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 7  # The| capital| of| France| is| Paris|.
    row = mockserver.last_request()
    assert row["scripted"] is True and row["usage"]["output_tokens"] == 7
    # Bodies are recorded under pytest by default.
    assert row["body"]["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert mockserver.request_bodies() == [row["body"]]


def test_a_long_scripted_text_is_cut_at_max_tokens(mockserver, anthropic_client):
    mockserver.reply("one two three four five six")
    message = anthropic_client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert (text_of(message), message.stop_reason) == ("one two three", "max_tokens")


def test_a_tool_use_for_a_request_that_offers_the_tool(mockserver, anthropic_client):
    mockserver.reply(tool_use={"name": "get_weather", "input": {"city": "Paris"}})
    ask(anthropic_client, "Hi there")  # offers no tool: not this request's reply
    assert mockserver.last_request()["scripted"] is False
    message = ask(anthropic_client, "And the weather?", tools=[WEATHER_TOOL])
    assert message.stop_reason == "tool_use"
    [block] = message.content  # the scripted call alone, no generated preamble
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert block.id.startswith("toolu_")
    # A bare name: the input is generated from the tool's schema.
    mockserver.reply("Let me look.", tool_use="get_weather")
    message = ask(anthropic_client, "Weather?", tools=[WEATHER_TOOL])
    text, call = message.content
    assert text.text == "Let me look." and call.name == "get_weather" and isinstance(call.input["city"], str)


def test_a_scripted_reply_streams_at_the_speed_that_serves_it(mockserver, anthropic_client):
    mockserver.reply("Streamed, word by word, at fast speed.", speed="fast")
    with anthropic_client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        standard = "".join(stream.text_stream)  # standard speed: not for this entry
    assert standard != "Streamed, word by word, at fast speed."
    with anthropic_client.beta.messages.stream(
        model=MODEL, max_tokens=100, speed="fast", betas=[FAST_BETA], messages=HELLO
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(deltas) == "Streamed, word by word, at fast speed."
    # Streamed|,| word| by| word|,| at| fast| speed|.
    assert final.usage.speed == "fast" and final.usage.output_tokens == 10
    row = mockserver.assert_fast()
    assert row["stream"] is True and row["scripted"] is True
    assert row["delivered_output_tokens"] == 10


def test_filters_times_and_clearing(mockserver, anthropic_client):
    mockserver.reply("About Paris.", contains="Paris", times=2)
    mockserver.reply("Opus only.", model="claude-opus-4-6")
    mockserver.reply("Always this.", times=None)  # until cleared
    assert text_of(ask(anthropic_client, "Tell me about Paris")) == "About Paris."
    assert text_of(ask(anthropic_client, "Anything else")) == "Always this."
    assert text_of(ask(anthropic_client, "Paris again")) == "About Paris."
    assert text_of(ask(anthropic_client, "Paris, a third time")) == "Always this."
    other = anthropic_client.messages.create(model="claude-opus-4-6", max_tokens=50, messages=HELLO)
    assert text_of(other) == "Opus only."
    used = [(entry["text"], entry["used"], entry["remaining"]) for entry in mockserver.scripted_replies()]
    assert used == [("About Paris.", 2, 0), ("Opus only.", 1, 0), ("Always this.", 2, None)]
    assert mockserver.clear_replies() == 3
    assert text_of(ask(anthropic_client, "Paris")) not in ("About Paris.", "Always this.")
    mockserver.reply("Gone after a reset.")
    mockserver.reset()
    assert mockserver.scripted_replies() == []
    assert text_of(ask(anthropic_client)) != "Gone after a reset."


def test_assert_requests_says_what_was_sent(mockserver, anthropic_client):
    anthropic_client.beta.messages.create(
        model=MODEL, max_tokens=10, speed="fast", betas=[FAST_BETA], messages=HELLO
    )
    ask(anthropic_client)
    [fast] = mockserver.assert_requests(count=1, model=MODEL, speed="fast")
    assert fast["body"]["speed"] == "fast"
    assert len(mockserver.assert_requests(count=2, status=200)) == 2
    with pytest.raises(AssertionError, match=r"expected 2 request\(s\) with speed='fast', found 1;"):
        mockserver.assert_requests(count=2, speed="fast")
    with pytest.raises(AssertionError, match="'speeed' is not a journal field"):
        mockserver.assert_requests(speeed="fast")


def test_bad_arguments_are_refused_before_anything_is_queued(mockserver):
    from mockserver.admin_client import AdminError

    with pytest.raises(ValueError, match="give error=<status> too"):
        mockserver.reply("Hi", headers={"retry-after": "1"})
    with pytest.raises(AdminError, match=r"error\.status: Input should be greater than or equal to 400"):
        mockserver.reply(error=200)
    with pytest.raises(AdminError, match=r"replies\.1\.stop_reason: Input should be"):
        mockserver.reply_sequence(["fine", {"text": "x", "stop_reason": "bored"}])
    assert mockserver.scripted_replies() == []  # all or nothing


@pytest.mark.redis
def test_a_sequence_on_a_redis_server_shared_by_two_workers_is_taken_once(
    mockserver_factory, redis_server: RedisServer
):
    # Two servers on one Redis and key prefix are two workers of one mockserver.
    shared = {"storage": redis_server.url, "key_prefix": unique_key_prefix()}
    first, second = mockserver_factory(**shared), mockserver_factory(**shared)
    clients = [first.anthropic_client(max_retries=0), second.anthropic_client(max_retries=0)]
    first.reply_sequence([f"Reply {n}." for n in range(1, 5)])
    # In turn, worker by worker: the order holds across workers.
    texts = [text_of(ask(clients[n % 2])) for n in range(4)]
    assert texts == ["Reply 1.", "Reply 2.", "Reply 3.", "Reply 4."]
    # At once, 24 requests over both workers for 16 entries: each taken exactly once.
    second.reply_sequence([f"Burst {n}." for n in range(16)])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: text_of(ask(clients[n % 2])), range(24)))
    scripted = sorted(answer for answer in answers if answer.startswith("Burst "))
    assert scripted == sorted(f"Burst {n}." for n in range(16))
    first.assert_requests(count=20, scripted=True)  # the journal is shared too
    assert all(entry["remaining"] == 0 for entry in first.scripted_replies())


def test_a_model_filter_naming_no_model_is_refused(mockserver):
    from mockserver.admin_client import AdminError

    with pytest.raises(AdminError) as caught:
        mockserver.reply("never", model="claude-opus-9")
    assert caught.value.status == 400
    assert (
        "model: this server has no model 'claude-opus-9', so no request would match" in caught.value.message
    )
    with pytest.raises(AdminError, match=r"replies\.1\.model: this server has no model 'opus'"):
        mockserver.reply_sequence(["a", {"text": "b", "model": "opus"}])
    assert mockserver.scripted_replies() == []  # nothing of a refused batch is queued
    mockserver.reply("aliases match", model="claude-opus-4-7")
    mockserver.clear_replies()


def test_assert_replies_used_names_what_no_request_took(mockserver, anthropic_client):
    mockserver.reply("for a fast request", speed="fast")
    mockserver.reply("for the weather", tool_use={"name": "get_weather", "input": {"city": "Paris"}})
    ask(anthropic_client)  # standard speed and no tools: neither matches
    with pytest.raises(AssertionError) as caught:
        mockserver.assert_replies_used()
    message = str(caught.value)
    assert message.startswith(
        "2 scripted replies were not used up: text 'for a fast request' for speed='fast'"
    )
    assert "tool_use 'get_weather' (1x, used 0)" in message
    mockserver.clear_replies()
    mockserver.assert_replies_used()


UNUSED = """
def test_unused(mockserver, anthropic_client):
    mockserver.reply("for fast requests", speed="fast")
    anthropic_client.messages.create(
        model="claude-opus-4-7", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )

def test_used(mockserver, anthropic_client):
    mockserver.reply("taken")
    anthropic_client.messages.create(
        model="claude-opus-4-7", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
"""


def test_a_passing_test_that_left_replies_unused_gets_a_warning(pytester):
    pytester.makepyfile(test_unused=UNUSED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "timeout", "--timeout=60")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*test_unused*",
            "*UnusedRepliesWarning: 1 scripted reply was not used up: text 'for fast requests'*",
        ]
    )
    strict = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::mockserver.pytest_plugin.UnusedRepliesWarning"
    )
    strict.assert_outcomes(passed=1, failed=1)
