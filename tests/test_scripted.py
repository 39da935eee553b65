"""Scripted replies on the server side: the admin API's checks; no store call while nothing is scripted."""

from __future__ import annotations

import concurrent.futures
import json
import time

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient
from mockserver.clock import FakeClock
from mockserver.testing import assert_retries_respect_retry_after
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

HELLO = [{"role": "user", "content": "Hello"}]
FAULT = "x-mockserver-fault"

redis_server = redis_server_fixture(scope="module")


@pytest.fixture
def running(start_server):
    server = start_server()
    admin = AdminClient(server.url)
    client = anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0)
    yield server, admin, client
    admin.close()
    client.close()


def nested(depth):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def scripted_429(headers):
    return {"error": {"status": 429, "headers": headers}}


def ask(client):
    return client.messages.create(model="claude-opus-4-7", max_tokens=20, messages=HELLO)


def test_an_empty_script_costs_no_store_call_per_request(running, monkeypatch):
    server, admin, client = running
    reads: list[str] = []
    store = server.state.store
    for name in ("items", "get_many", "incr"):
        real = getattr(store, name)

        async def counting(key, *args, _real=real, **kwargs):
            keys = key if isinstance(key, list) else [key]
            reads.extend(k for k in keys if k.startswith("scripted:"))
            return await _real(key, *args, **kwargs)

        monkeypatch.setattr(store, name, counting)
    ask(client)  # the first request of a worker reads the (empty) script once
    assert reads == ["scripted:entries"]
    for _ in range(5):
        ask(client)
    assert reads == ["scripted:entries"]
    admin.add_replies({"text": "Scripted."})
    assert ask(client).content[0].text == "Scripted."  # read again after the change, then claimed
    used = len(reads)
    ask(client)
    ask(client)
    assert len(reads) == used  # used up: known to this worker without asking the store


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "give the reply (text, tool_use or both) or an error"),
        ({"text": "a", "error": {"status": 500}}, "a scripted error cannot also carry text"),
        ({"error": {"status": 200}}, "error.status: Input should be greater than or equal to 400"),
        ({"error": {"status": 429, "headers": {"retry-after": 1}}}, "error.headers.retry-after: Input"),
        (scripted_429({"retry-after": "😀"}), "error.headers.retry-after: not a valid header value"),
        (scripted_429({"x-a": "1\r\nx-b: 2"}), "error.headers.x-a: not a valid header value"),
        (scripted_429({"bad name": "1"}), "error.headers.bad name: not a valid header name"),
        (scripted_429({"é": "1"}), "error.headers.é: not a valid header name"),
        (scripted_429({"Content-Length": "5"}), "error.headers.Content-Length: set by the server"),
        (scripted_429({"request-id": "x"}), "error.headers.request-id: set by the server"),
        ({"text": "a", "speed": "slow"}, "speed: Input should be 'standard' or 'fast'"),
        ({"text": "a", "times": -1}, "times: Input should be greater than or equal to 0"),
        ({"tool_use": {"input": {}}}, "tool_use.name: Field required"),
        ({"text": "a", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"replies": []}, "replies: expected a non-empty list of replies"),
        ({"replies": [{"text": "a"}, "b"]}, "replies.1: Input should be a valid dictionary"),
        ({"replies": [{"text": "a"}], "text": "b"}, "text: give either one reply or {'replies': [...]}"),
        # Headers are checked before they are queued: a bad one dropped the connection, or was a 500.
        (
            {"error": {"status": 503, "headers": {"retry-after": "a\r\nx-injected: 1"}}},
            "error.headers.retry-after: not a valid header value: visible Latin-1 characters",
        ),
        (
            {"replies": [{"error": {"status": 503, "headers": {"retry-after": "é☃"}}}]},
            "replies.0.error.headers.retry-after: not a valid header value",
        ),
        ({"error": {"status": 503, "headers": {"x-note": " padded"}}}, "error.headers.x-note: not a valid"),
        (
            {"error": {"status": 503, "headers": {"x note": "a"}}},
            "error.headers.x note: not a valid header name: letters, digits and",
        ),
        ({"error": {"status": 503, "headers": {"": "a"}}}, "error.headers.: not a valid header name"),
        (
            {"error": {"status": 503, "headers": {"Content-Length": "5"}}},
            "error.headers.Content-Length: set by the server",
        ),
        (
            {"error": {"status": 429, "retry_after": "inf"}},
            "error.retry_after: Input should be a finite number",
        ),
        # As deep as a request's tool input may be: deeper was stored, then a 500 on every request.
        ({"tool_use": {"name": "f", "input": nested(129)}}, "tool_use.input: JSON nested more than 128"),
        ({"tool_use": {"name": "f", "input": nested(600)}}, "tool_use.input: JSON nested more than 128"),
        ({"text": "a", "model": "claude-opus-9"}, "model: this server has no model 'claude-opus-9'"),
        # Bounded as a fault's is: 1e308 went out as a 309-digit retry-after header.
        (
            {"error": {"status": 429, "retry_after": 1e308}},
            "error.retry_after: Input should be less than or equal to 86400",
        ),
        (
            {"replies": [{"error": {"status": 503, "retry_after": 86400.5}}]},
            "replies.0.error.retry_after: Input should be less than or equal to 86400",
        ),
    ],
)
def test_a_bad_entry_is_a_400_naming_the_field_and_queues_nothing(running, body, words):
    server, admin, _ = running
    response = httpx.post(f"{server.url}/_admin/replies", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert words in error["error"]["message"]
    assert admin.replies() == []


def test_the_routes_need_the_admin_token(start_server):
    server = start_server(admin={"token": "secret"})
    for method in ("GET", "POST", "DELETE"):
        response = httpx.request(method, f"{server.url}/_admin/replies", json={"text": "a"})
        assert response.status_code == 401, method
    with AdminClient(server.url, token="secret") as admin:
        [entry] = admin.add_replies({"text": "a", "times": 0})
        assert entry["id"].startswith("scripted_") and entry["remaining"] is None
        assert admin.clear_replies() == 1


def test_a_scripted_header_is_sent_as_given(running):
    server, admin, client = running
    admin.add_replies({"error": {"status": 429, "headers": {"Retry-After": "7", "x-note": "a\tb c"}}})
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-note"] == "a\tb c"
    assert server.state.server_errors == []


@pytest.mark.redis
def test_a_script_change_is_seen_by_every_worker_without_rebuilding_its_runtime(
    start_server, redis_server: RedisServer
):
    # Two servers on one Redis and key prefix are two workers of one mockserver.
    shared = {"storage": redis_server.url, "key_prefix": unique_key_prefix()}
    first, second = start_server(**shared), start_server(**shared)
    clients = [anthropic.Anthropic(api_key="sk-test", base_url=s.url, max_retries=0) for s in (first, second)]
    with AdminClient(first.url) as admin:
        admin.configure(seed=3)  # a stored patch: a rebuild would make a new runtime from it
        ask(clients[1])  # the second worker has read the (empty) script
        runtimes = first.state.runtime, second.state.runtime
        admin.add_replies({"text": "Scripted on the first."}, {"text": "Then on the second."})
        assert ask(clients[0]).content[0].text == "Scripted on the first."
        assert ask(clients[1]).content[0].text == "Then on the second."  # seen as soon as the call answered
        assert admin.clear_replies() == 2
        # The same objects: no worker rebuilt its runtime (re-validated settings, re-read replies files).
        assert (first.state.runtime is runtimes[0], second.state.runtime is runtimes[1]) == (True, True)
        admin.configure(seed=5)  # a settings change still rebuilds every worker's runtime
        ask(clients[1])
        assert second.state.runtime.settings.seed == 5
    for client in clients:
        client.close()


@pytest.mark.parametrize(
    ("fault", "status"),
    [({"kind": "http_error", "status": 529}, 529), ({"kind": "reset"}, 0)],  # 0: the connection was reset
)
def test_a_reply_refused_by_a_fault_waits_for_the_retry(running, fault, status):
    server, admin, _ = running
    admin.add_replies({"text": "Scripted, on the retry."})
    header = json.dumps({**fault, "count": 1})  # attempt 0 only
    with anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=1) as client:
        message = client.messages.create(
            model="claude-opus-4-7", max_tokens=20, messages=HELLO, extra_headers={FAULT: header}
        )
    assert message.content[0].text == "Scripted, on the retry."
    rows = admin.requests()
    assert [(row["status"], row["fault"], row["scripted"]) for row in rows] == [
        (status, "request-header", False),
        (200, None, True),
    ]
    [entry] = admin.replies()
    assert (entry["used"], entry["remaining"]) == (1, 0)


def test_a_reply_refused_by_rate_limits_is_not_used_up(start_server):
    clock = FakeClock()
    # Unpaced: a JSON reply would otherwise wait on the fake clock for its modelled generation time.
    timing = {"time_scale": 1000.0, "pace_non_streaming": False}
    server = start_server(clock=clock, limits={"requests_per_minute": 1}, timing=timing)
    with (
        AdminClient(server.url) as admin,
        anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0) as client,
    ):
        ask(client)  # the minute's only request
        admin.add_replies({"text": "Scripted, once admitted."})
        with pytest.raises(anthropic.RateLimitError):
            ask(client)
        [entry] = admin.replies()
        assert (entry["used"], entry["remaining"]) == (0, 1)
        assert admin.requests()[-1]["scripted"] is False  # a 429 of the limits, not the script's answer
        clock.advance(60)
        assert ask(client).content[0].text == "Scripted, once admitted."
        assert [row["scripted"] for row in admin.requests()] == [False, False, True]
        [entry] = admin.replies()
        assert (entry["used"], entry["remaining"]) == (1, 0)


@pytest.mark.redis
def test_a_use_given_back_on_one_worker_is_served_by_another_that_saw_it_used_up(
    start_server, redis_server: RedisServer
):
    """Worker 1's request takes the entry's only use and waits (a latency fault); worker 2's request,
    over the limit, counts it as used up; worker 1's request is then refused by its rate limit and
    gives the use back: worker 2 serves it to its next request."""
    clock = FakeClock()
    shared = {
        "storage": redis_server.url,
        "key_prefix": unique_key_prefix(),
        "timing": {"time_scale": 1000.0, "pace_non_streaming": False},
        "organizations": {"slow": {"keys": ["sk-slow"], "requests_per_minute": 1}},
    }
    first, second = start_server(clock=clock, **shared), start_server(clock=clock, **shared)
    slow = anthropic.Anthropic(api_key="sk-slow", base_url=first.url, max_retries=0)
    other = anthropic.Anthropic(api_key="sk-other", base_url=second.url, max_retries=0)
    latency = json.dumps({"kind": "latency", "latency_seconds": 5})
    with AdminClient(first.url) as admin, concurrent.futures.ThreadPoolExecutor(1) as pool:
        ask(slow)  # the slow organisation's only request this minute
        ask(other)  # the second worker has read the (empty) script
        admin.add_replies({"text": "Scripted."})
        refused = pool.submit(ask, slow.with_options(default_headers={FAULT: latency}))
        while clock.pending_sleepers == 0:  # it holds the use, asleep in its fault
            time.sleep(0.001)
        assert ask(other).content[0].text != "Scripted."  # none left here: counted as used up
        clock.advance(5)
        with pytest.raises(anthropic.RateLimitError):
            refused.result(timeout=10)
        assert ask(other).content[0].text == "Scripted."
        [entry] = admin.replies()
        assert (entry["used"], entry["remaining"]) == (1, 0)
        assert [row["scripted"] for row in admin.requests()] == [False, False, False, False, True]
    slow.close()
    other.close()


@pytest.mark.parametrize("speed", ["standard", "fast"])
def test_a_scripted_429_goes_out_as_a_fault_429_does(start_server, speed):
    """One error model: the same status line, envelope and headers (the caller's rate-limit headers,
    anthropic-fast-* at fast speed), whichever of the two asked for it."""
    server = start_server(clock=FakeClock())  # both read the buckets at the same instant
    body = {"model": "claude-opus-4-7", "max_tokens": 20, "messages": HELLO}
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
    if speed == "fast":
        body["speed"] = "fast"
        headers["anthropic-beta"] = "fast-mode-2026-02-01"
    error = {
        "status": 429,
        "type": "rate_limit_error",
        "message": "Slow down",
        "headers": {"retry-after": "2"},
    }
    fault = {"kind": "http_error", "status": 429, "error_type": "rate_limit_error", "message": "Slow down"}
    with AdminClient(server.url) as admin, httpx.Client(base_url=server.url) as http:
        admin.add_replies({"error": error})
        scripted = http.post("/v1/messages", json=body, headers=headers)
        fault_header = json.dumps({**fault, "retry_after": 2})
        injected = http.post("/v1/messages", json=body, headers={**headers, FAULT: fault_header})
        rows = admin.requests()
    assert scripted.status_code == injected.status_code == 429
    assert (
        scripted.json()["error"]
        == injected.json()["error"]
        == {"type": "rate_limit_error", "message": "Slow down"}
    )

    def wire(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k not in ("request-id", "date")}

    assert wire(scripted) == wire(injected)
    assert scripted.headers["retry-after"] == "2"
    family = "anthropic-fast-" if speed == "fast" else "anthropic-ratelimit-"
    assert f"{family}output-tokens-remaining" in scripted.headers
    assert [(row["scripted"], row["fault"], row["retry_after"]) for row in rows] == [
        (True, None, 2.0),
        (False, "request-header", 2.0),
    ]


def test_retries_after_a_scripted_429_respect_its_retry_after(start_server):
    server = start_server()
    with AdminClient(server.url) as admin:
        admin.add_replies({"error": {"status": 429, "retry_after": 1}}, {"text": "After the wait."})
        with anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=1) as client:
            assert ask(client).content[0].text == "After the wait."
        [retry] = assert_retries_respect_retry_after(admin.requests())
        assert retry.retry_after == 1.0 and retry.waited >= 1.0


def test_a_scripted_header_goes_out_as_given_in_latin_1(running):
    server, admin, _ = running
    admin.add_replies({"error": {"status": 503, "headers": {"X-Note": "café\tau lait", "retry-after": "3"}}})
    with httpx.Client(base_url=server.url) as http:
        body = {"model": "claude-opus-4-7", "max_tokens": 20, "messages": HELLO}
        response = http.post(
            "/v1/messages", json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 503
    assert response.headers["x-note"] == "café\tau lait" and response.headers.get_list("retry-after") == ["3"]
    assert not server.state.server_errors


@pytest.mark.parametrize("field", ["retry_after", "retry_after_ms"])
def test_a_fault_header_with_an_infinite_wait_is_a_400(running, field):
    server, _, client = running
    fault = json.dumps({"kind": "http_error", "status": 429, field: "inf"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-opus-4-7", max_tokens=20, messages=HELLO, extra_headers={FAULT: fault}
        )
    assert (
        caught.value.body["error"]["message"]
        == f"x-mockserver-fault: {field}: Input should be a finite number"
    )
    assert not server.state.server_errors


def test_fault_text_fields_reach_the_body_only(running):
    _, _, client = running
    fault = {
        "kind": "http_error",
        "status": 529,
        "message": "a\r\nx-injected: 1",
        "error_type": "b\r\nx-other: 2",
    }
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(
            model="claude-opus-4-7", max_tokens=20, messages=HELLO, extra_headers={FAULT: json.dumps(fault)}
        )
    response = caught.value.response
    assert (
        response.status_code == 529
        and "x-injected" not in response.headers
        and "x-other" not in response.headers
    )
    assert response.json()["error"] == {"type": "b\r\nx-other: 2", "message": "a\r\nx-injected: 1"}
