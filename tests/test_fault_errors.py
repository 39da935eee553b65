"""Injected errors as the real API sends them: each status with its error type, the rate-limit headers
of a 429, and header faults that count the SDK's attempts of one request."""

from __future__ import annotations

import json
import uuid

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient
from mockserver.clock import FakeClock
from tests.support.redis_server import redis_server_fixture

FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]
FAULT = "x-mockserver-fault"
FAST_HEADERS = {
    f"anthropic-fast-{kind}-tokens-{part}"
    for kind in ("input", "output")
    for part in ("limit", "remaining", "reset")
}

redis_server = redis_server_fixture(scope="module")


def client_for(server, **kwargs):
    return anthropic.Anthropic(api_key="sk-faults", base_url=server.url, **{"max_retries": 0, **kwargs})


def ask(client, speed=None, fault=None, **kwargs):
    extra = {"speed": speed} if speed else {}
    headers = {FAULT: fault if isinstance(fault, str) else json.dumps(fault)} if fault else None
    return client.beta.messages.create(
        model="claude-opus-4-7",
        max_tokens=20,
        messages=HELLO,
        betas=[FAST_BETA],
        extra_headers=headers,
        **extra,
        **kwargs,
    )


def journal(server):
    with AdminClient(server.url) as admin:
        return admin.requests()


# Reference §8.2: the status, its error.type and the class SDK2 raises for it.
@pytest.mark.parametrize(
    ("status", "error_type", "error_class"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (402, "billing_error", anthropic.PaymentRequiredError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (408, "invalid_request_error", anthropic.RequestTimeoutError),
        (409, "conflict_error", anthropic.ConflictError),
        (413, "request_too_large", anthropic.ContentTooLargeError),
        (422, "invalid_request_error", anthropic.UnprocessableEntityError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (502, "api_error", anthropic.InternalServerError),
        (503, "api_error", anthropic.ServiceUnavailableError),
        (504, "timeout_error", anthropic.GatewayTimeoutError),
        (529, "overloaded_error", anthropic.OverloadedError),
    ],
)
def test_each_injected_status_has_the_apis_error_type(server, status, error_type, error_class):
    with pytest.raises(error_class) as caught:
        ask(client_for(server), fault={"kind": "http_error", "status": status})
    error = caught.value
    assert type(error) is error_class
    assert (error.status_code, error.type) == (status, error_type)
    assert error.body["type"] == "error" and error.request_id.startswith("req_")


def fake_clock_server(start_server, **overrides):
    timing = {"time_scale": 1000.0, "pace_non_streaming": False}
    return start_server(clock=FakeClock(), timing=timing, **overrides)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_fast_outage_429_carries_the_fast_headers_at_the_current_levels(start_server, request, store):
    storage = {}
    if store == "redis":
        redis = request.getfixturevalue("redis_server")
        storage = {"storage": redis.url, "key_prefix": f"t-{uuid.uuid4().hex}:"}
    limits = {"fast_input_tokens_per_minute": 5000, "fast_output_tokens_per_minute": 6000}
    server = fake_clock_server(start_server, limits=limits, **storage)
    client = client_for(server)
    served = ask(client, speed="fast")  # the clock stands still: its charge stays in the buckets
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client, speed="fast", fault={"kind": "fast_outage"})
    headers = caught.value.response.headers
    assert set(headers) >= FAST_HEADERS
    assert not any(name.startswith("anthropic-ratelimit-") for name in headers)
    assert headers["anthropic-fast-input-tokens-limit"] == "5000"
    assert headers["anthropic-fast-output-tokens-limit"] == "6000"
    input_left = 5000 - served.usage.input_tokens
    assert headers["anthropic-fast-input-tokens-remaining"] == str(input_left)
    assert headers["anthropic-fast-output-tokens-remaining"] == str(6000 - served.usage.output_tokens)
    assert headers["retry-after"] == "1"
    # The outage charged nothing: the next request finds the levels the 429 reported.
    after = client.beta.messages.with_raw_response.create(
        model="claude-opus-4-7", max_tokens=20, messages=HELLO, betas=[FAST_BETA], speed="fast"
    )
    assert after.headers["anthropic-fast-input-tokens-remaining"] == str(
        input_left - served.usage.input_tokens
    )


def test_an_injected_429_carries_the_headers_of_the_requests_speed(start_server):
    server = fake_clock_server(start_server, limits={"fast_output_tokens_per_minute": 6000})
    client = client_for(server)
    storm = {"kind": "http_error", "status": 429}
    with pytest.raises(anthropic.RateLimitError) as fast:
        ask(client, speed="fast", fault=storm)
    assert set(fast.value.response.headers) >= FAST_HEADERS
    assert fast.value.response.headers["anthropic-fast-output-tokens-remaining"] == "6000"
    with pytest.raises(anthropic.RateLimitError) as standard:
        ask(client, fault=storm)
    standard_headers = standard.value.response.headers
    assert standard_headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert not any(name.startswith("anthropic-fast-") for name in standard_headers)
    # Only a 429 reads the buckets: other injected errors carry no rate-limit headers.
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        ask(client, speed="fast", fault={"kind": "http_error", "status": 529})
    assert not any(name.startswith("anthropic-") for name in overloaded.value.response.headers)


def test_an_injected_429_with_limits_off_has_no_rate_limit_headers(start_server):
    server = start_server(limits={"enabled": False})
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client_for(server), speed="fast", fault={"kind": "fast_outage"})
    assert not any(name.startswith("anthropic-fast-") for name in caught.value.response.headers)


def test_a_header_fault_with_count_1_fails_only_the_first_attempt(start_server):
    server = start_server()
    client = anthropic.Anthropic(api_key="sk-faults", base_url=server.url)  # the default 2 retries
    message = ask(client, fault={"kind": "http_error", "status": 529, "count": 1})
    assert message.usage.output_tokens == 20
    assert [(r["status"], r["retry_count"], r["fault"]) for r in journal(server)] == [
        (529, 0, "request-header"),
        (200, 1, None),
    ]


def test_a_header_fault_counts_attempts_not_requests(start_server):
    server = start_server()
    fault = {"kind": "http_error", "status": 500, "count": 2, "retry_after_ms": 1}
    with pytest.raises(anthropic.InternalServerError):
        ask(client_for(server, max_retries=1), fault=fault)  # attempts 0 and 1 both fail
    assert ask(client_for(server, max_retries=2), fault=fault).usage.output_tokens == 20  # a new request
    assert [(r["status"], r["retry_count"]) for r in journal(server)] == [
        (500, 0),
        (500, 1),
        (500, 0),
        (500, 1),
        (200, 2),
    ]


def test_a_client_without_a_retry_count_is_always_on_its_first_attempt(start_server):
    server = start_server()
    headers = {
        "x-api-key": "sk-curl",
        "anthropic-version": "2023-06-01",
        FAULT: '{"status": 529, "count": 1, "kind": "http_error"}',
    }
    body = {"model": "claude-opus-4-7", "max_tokens": 5, "messages": HELLO}
    statuses = [
        httpx.post(f"{server.url}/v1/messages", json=body, headers=headers).status_code for _ in range(2)
    ]
    assert statuses == [529, 529]
    headers["x-stainless-retry-count"] = "1"
    assert httpx.post(f"{server.url}/v1/messages", json=body, headers=headers).status_code == 200


def test_a_named_fault_in_the_header_honours_its_count(start_server):
    # Every attempt carries the header, so the fault's count is only ever the header's, by attempt.
    named = {"name": "flaky", "kind": "http_error", "status": 529, "count": 1, "model": "claude-opus-4-7"}
    server = start_server(faults=[named])
    client = anthropic.Anthropic(api_key="sk-faults", base_url=server.url, max_retries=1)
    assert ask(client, fault="flaky").usage.output_tokens == 20
    assert [(r["status"], r["fault"]) for r in journal(server)] == [(529, "flaky"), (200, None)]


@pytest.mark.parametrize("trigger", [{"every": 2}, {"probability": 0.5}])
def test_stream_triggers_are_refused_in_a_header_fault(server, trigger):
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client_for(server), fault={"kind": "http_error", "status": 529, **trigger})
    (field,) = trigger
    assert caught.value.api_message.startswith(f"{FAULT}: {field}: ")
    assert "/_admin/faults" in caught.value.api_message


@pytest.mark.parametrize("retry_count", ["²".encode("latin-1"), b"9" * 5_000, b"-1", b"many"])
def test_an_unreadable_retry_count_is_the_first_attempt_of_a_header_fault(server, retry_count):
    # "²" passes str.isdigit and 5,000 digits are beyond int(): both were a 500 with a header fault.
    headers = {
        "x-api-key": "sk-curl",
        "anthropic-version": "2023-06-01",
        FAULT: '{"status": 529, "count": 1, "kind": "http_error"}',
        "x-stainless-retry-count": retry_count,
    }
    body = {"model": "claude-opus-4-7", "max_tokens": 5, "messages": HELLO}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 529, response.text
    assert response.json()["error"]["type"] == "overloaded_error"
    assert server.state.server_errors == []


@pytest.mark.parametrize("field", ["retry_after", "retry_after_ms", "start_at", "end_at"])
@pytest.mark.parametrize("value", ["inf", "1e400", "-Infinity", "nan"])
def test_a_fault_number_must_be_finite(server, field, value):
    # pydantic reads these strings as floats: retry_after "inf" was a 500 on every request it hit.
    fault = {"kind": "http_error", "status": 529, field: value}
    response = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": "claude-opus-4-7", "max_tokens": 5, "messages": HELLO},
        headers={"x-api-key": "sk", "anthropic-version": "2023-06-01", FAULT: json.dumps(fault)},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == f"{FAULT}: {field}: Input should be a finite number"
    created = httpx.post(f"{server.url}/_admin/faults", json={"name": "infinite", **fault})
    assert created.status_code == 400, created.text
    assert created.json()["error"]["message"] == f"{field}: Input should be a finite number"
    assert server.state.server_errors == []


def post_with_fault(server, fault, *, speed="standard", stream=False):
    """A request by httpx (streams read to the end) with `fault` in the header; its journal row."""
    headers = {
        "x-api-key": "sk-targets",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": FAST_BETA,
        FAULT: fault if isinstance(fault, str) else json.dumps(fault),
    }
    body = {"model": "claude-opus-4-7", "max_tokens": 5, "messages": HELLO, "speed": speed, "stream": stream}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers)
    return response, journal(server)[-1]


NOT_TARGETED = [
    pytest.param({"kind": "fast_outage"}, "standard", False, id="fast_outage-on-standard"),
    pytest.param({"kind": "http_error", "status": 503, "end_at": 1}, "standard", False, id="window-ended"),
    pytest.param(
        {"kind": "http_error", "status": 503, "start_at": 4102444800}, "standard", False, id="window-ahead"
    ),
    pytest.param(
        {"kind": "http_error", "status": 503, "model": "claude-haiku-4-5"}, "standard", False, id="model"
    ),
    pytest.param({"kind": "http_error", "status": 503, "speed": "fast"}, "standard", False, id="speed-fast"),
    pytest.param(
        {"kind": "http_error", "status": 503, "speed": "standard"}, "fast", False, id="speed-standard"
    ),
    pytest.param(
        {"kind": "http_error", "status": 503, "path": "/v1/messages/batches"}, "standard", False, id="path"
    ),
    pytest.param({"kind": "http_error", "status": 503, "stream": True}, "standard", False, id="stream-true"),
    pytest.param({"kind": "http_error", "status": 503, "stream": False}, "standard", True, id="stream-false"),
    pytest.param(
        {"kind": "http_error", "status": 503, "organization": "org-other"}, "standard", False, id="org"
    ),
    pytest.param({"kind": "stream_error"}, "standard", False, id="stream-kind-on-json"),
]


@pytest.mark.parametrize(("fault", "speed", "stream"), NOT_TARGETED)
def test_a_header_fault_passes_over_a_request_it_does_not_target(server, fault, speed, stream):
    # The header skipped matches() and the window: a fast_outage 429'd standard requests, a window
    # that ended in 1970 still fired. It now selects as a fault added through /_admin/faults does.
    response, row = post_with_fault(server, fault, speed=speed, stream=stream)
    assert response.status_code == 200, response.text
    assert row["fault"] is None
    assert server.state.server_errors == []


TARGETED = [
    pytest.param({"kind": "fast_outage"}, "fast", False, 429, id="fast_outage-on-fast"),
    pytest.param(
        {"kind": "http_error", "status": 503, "start_at": 0, "end_at": 4102444800},
        "standard",
        False,
        503,
        id="window-open",
    ),
    pytest.param(
        {"kind": "http_error", "status": 503, "model": "claude-opus-4-7"}, "standard", False, 503, id="model"
    ),
    pytest.param({"kind": "http_error", "status": 503, "speed": "fast"}, "fast", False, 503, id="speed"),
    pytest.param({"kind": "http_error", "status": 503, "path": "/v1"}, "standard", False, 503, id="path"),
    pytest.param({"kind": "http_error", "status": 503, "stream": True}, "standard", True, 503, id="stream"),
]


@pytest.mark.parametrize(("fault", "speed", "stream", "status"), TARGETED)
def test_a_header_fault_fires_on_a_request_it_targets(server, fault, speed, stream, status):
    response, row = post_with_fault(server, fault, speed=speed, stream=stream)
    assert response.status_code == status, response.text
    assert row["fault"] == "request-header"


@pytest.mark.parametrize("targets", [{"model": "claude-haiku-4-5"}, {"start_at": 0, "end_at": 1}])
def test_a_configured_fault_named_in_the_header_keeps_its_targets_and_window(start_server, targets):
    server = start_server(faults=[{"name": "aimed", "kind": "http_error", "status": 529, **targets}])
    response, row = post_with_fault(server, "aimed")
    assert response.status_code == 200, response.text
    assert row["fault"] is None


def refusals(server, fault):
    """The messages of the 400s that the header and /_admin/faults answer `fault` with."""
    in_header, _ = post_with_fault(server, fault)
    created = httpx.post(f"{server.url}/_admin/faults", json={"name": "refused", **fault})
    assert (in_header.status_code, created.status_code) == (400, 400), (in_header.text, created.text)
    for response in (in_header, created):
        assert response.json()["error"]["type"] == "invalid_request_error"
    return in_header.json()["error"]["message"], created.json()["error"]["message"]


@pytest.mark.parametrize(("start_at", "end_at"), [(10, 5), (5, 5), (0, -1), (4102444800, 0)])
def test_a_window_that_ends_before_it_starts_is_a_400_naming_end_at(server, start_at, end_at):
    fault = {"kind": "http_error", "status": 503, "start_at": start_at, "end_at": end_at}
    words = f"end_at: must be later than start_at ({float(start_at)}); the window would be empty"
    assert refusals(server, fault) == (f"{FAULT}: {words}", words)
    assert httpx.get(f"{server.url}/_admin/faults").json()["data"] == []


@pytest.mark.parametrize("window", [{"start_at": 0}, {"end_at": 0}, {"start_at": 0, "end_at": 1}])
def test_a_window_at_the_epoch_is_a_trigger_like_any_other(server, window):
    # start_at 0 was falsy: {"count": 1, "start_at": 0} passed as a single trigger.
    words = "give at most one trigger: probability, count, every, or start_at/end_at"
    assert refusals(server, {"kind": "http_error", "status": 503, "count": 1, **window}) == (
        f"{FAULT}: {words}",
        words,
    )


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("retry_after", 1e308, "86400"),
        ("retry_after", 86400.5, "86400"),
        ("retry_after_ms", 2**70, "86400000"),
        ("retry_after_ms", 86_400_001, "86400000"),
    ],
)
def test_a_retry_after_beyond_a_day_is_a_400_naming_the_field(server, field, value, limit):
    # 1e308 went out as a 309-digit retry-after header, 2**70 ms as retry-after-ms: 1.18059e+21.
    fault = {"kind": "http_error", "status": 529, field: value}
    words = f"{field}: Input should be less than or equal to {limit}"
    assert refusals(server, fault) == (f"{FAULT}: {words}", words)
    assert server.state.server_errors == []


def test_a_retry_after_of_a_day_is_sent_in_full(server):
    fault = {"kind": "http_error", "status": 529, "retry_after": 86400, "retry_after_ms": 86_400_000}
    response, _ = post_with_fault(server, fault)
    assert response.status_code == 529
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("86400", "86400000")
