"""Chaos before the first byte: HTTP errors, latency, resets, fast outages, degraded speed."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient, AdminError
from mockserver.clock import FakeClock

FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]


def client_for(server, retries=0, **kwargs):
    return anthropic.Anthropic(api_key="sk-chaos", base_url=server.url, max_retries=retries, **kwargs)


def ask(client, speed=None, **kwargs):
    extra = {"speed": speed} if speed else {}
    return client.beta.messages.create(
        model="claude-opus-4-7", max_tokens=20, messages=HELLO, betas=[FAST_BETA], **extra, **kwargs
    )


def journal(server):
    with AdminClient(server.url) as admin:
        return admin.requests()


def test_overloaded_once_is_retried_by_the_sdk(start_server):
    server = start_server(
        faults=[{"name": "overload", "kind": "http_error", "status": 529, "count": 1, "retry_after_ms": 50}]
    )
    message = ask(client_for(server, retries=2))
    assert message.usage.output_tokens == 20
    rows = journal(server)
    assert [(r["status"], r["retry_count"], r["fault"]) for r in rows] == [
        (529, 0, "overload"),
        (200, 1, None),
    ]
    assert rows[0]["error_type"] == "overloaded_error"


def test_should_retry_false_stops_the_sdk(start_server):
    server = start_server(
        faults=[{"name": "final", "kind": "http_error", "status": 529, "should_retry": False}]
    )
    with pytest.raises(anthropic.OverloadedError) as caught:
        ask(client_for(server, retries=2))
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(journal(server)) == 1


def test_should_retry_true_makes_the_sdk_retry_a_400(start_server):
    fault = {
        "name": "flaky400",
        "kind": "http_error",
        "status": 400,
        "count": 1,
        "should_retry": True,
        "retry_after_ms": 10,
    }
    server = start_server(faults=[fault])
    assert ask(client_for(server, retries=1)).usage.output_tokens == 20
    assert [r["status"] for r in journal(server)] == [400, 200]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (500, anthropic.InternalServerError),
        (503, anthropic.ServiceUnavailableError),
        (504, anthropic.GatewayTimeoutError),
    ],
)
def test_5xx_envelopes(start_server, status, error_class):
    server = start_server(faults=[{"name": f"e{status}", "kind": "http_error", "status": status}])
    with pytest.raises(error_class) as caught:
        ask(client_for(server))
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error" and caught.value.request_id.startswith("req_")


def test_429_retry_after_is_honoured(start_server):
    server = start_server(
        faults=[{"name": "storm", "kind": "http_error", "status": 429, "count": 1, "retry_after": 1}]
    )
    started = time.monotonic()
    ask(client_for(server, retries=1))
    assert time.monotonic() - started >= 1.0
    first, second = journal(server)
    assert first["error_type"] == "rate_limit_error" and second["started_at"] - first["started_at"] >= 1.0


def test_fast_outage_window_and_the_fallback_pattern(start_server):
    now = time.time()
    server = start_server(
        faults=[{"name": "no-fast", "kind": "fast_outage", "start_at": now - 1, "end_at": now + 600}]
    )
    client = client_for(server)
    try:
        message = ask(client, speed="fast")
    except anthropic.RateLimitError as error:
        assert int(error.response.headers["retry-after"]) == 60  # the window is longer: capped at a minute
        message = ask(client)  # the seed's fallback: resend without speed
    assert message.usage.speed == "standard"
    assert [r["fault"] for r in journal(server)] == ["no-fast", None]


def test_latency_before_the_first_byte_trips_a_read_timeout(start_server):
    server = start_server(
        timing={"time_scale": 1000.0}, faults=[{"name": "slow", "kind": "latency", "latency_seconds": 2.0}]
    )
    started = time.monotonic()
    # Normally APITimeoutError; under load httpx2 sometimes lets httpcore2's ReadTimeout through,
    # which the SDK then reports as its parent class, APIConnectionError.
    with pytest.raises(anthropic.APIConnectionError):
        ask(client_for(server, timeout=0.5))
    assert time.monotonic() - started < 1.9  # the client gave up; the server was still waiting
    relaxed = client_for(server, timeout=10)
    started = time.monotonic()
    ask(relaxed)
    assert time.monotonic() - started >= 2.0


def wait_for(condition, what, limit=10.0):
    deadline = time.monotonic() + limit  # a bound for a broken build, not a timing assertion
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "overrides",
    [
        {"faults": [{"name": "slow", "kind": "latency", "latency_seconds": 3600}]},
        {"timing": {"pace_non_streaming": True}},  # the reply waits its generation time
    ],
    ids=["latency fault", "paced reply"],
)
def test_a_request_whose_client_hangs_up_stops_waiting_and_is_recorded(start_server, overrides):
    # On a clock nobody moves the wait would never end: the server must notice the client left.
    server = start_server(clock=FakeClock(), **overrides)
    with pytest.raises(anthropic.APIConnectionError):  # APITimeoutError, or its parent under load
        ask(client_for(server, timeout=0.5))
    wait_for(lambda: server.requests_in_flight == 0, "the abandoned request to end")
    assert [(row["status"], row["path"]) for row in journal(server)] == [(499, "/v1/messages")]
    assert server.state.clock.pending_sleepers == 0


def test_reset_is_a_connection_error_and_is_retried(start_server):
    server = start_server(faults=[{"name": "rst", "kind": "reset", "count": 1}])
    with pytest.raises(anthropic.APIConnectionError):
        ask(client_for(server))
    assert ask(client_for(server)).usage.output_tokens == 20  # the fault fired once
    start_server_again = start_server(faults=[{"name": "rst", "kind": "reset", "count": 1}])
    assert ask(client_for(start_server_again, retries=1)).usage.output_tokens == 20
    assert [r["status"] for r in journal(start_server_again)] == [0, 200]


def test_degraded_speed_needs_the_switch(start_server):
    with pytest.raises(Exception, match="allow_degraded_speed"):
        start_server(faults=[{"name": "slowfast", "kind": "degrade_speed"}])
    server = start_server(
        chaos={"allow_degraded_speed": True}, faults=[{"name": "slowfast", "kind": "degrade_speed"}]
    )
    message = ask(client_for(server), speed="fast")
    assert message.usage.speed == "standard"
    assert journal(server)[0]["speed"] == "standard"


def test_probability_is_reproducible_with_the_seed(start_server):
    fault = [{"name": "coin", "kind": "http_error", "status": 500, "probability": 0.5}]
    patterns = []
    for seed in (7, 7, 8):
        server = start_server(seed=seed, faults=fault)
        client = client_for(server)
        outcome = []
        for _ in range(24):
            try:
                ask(client)
                outcome.append(200)
            except anthropic.InternalServerError:
                outcome.append(500)
        patterns.append(outcome)
    assert patterns[0] == patterns[1] and patterns[0] != patterns[2]
    assert 4 <= patterns[0].count(500) <= 20


def test_every_nth_and_target_filters(start_server):
    faults = [{"name": "third-fast", "kind": "http_error", "status": 500, "every": 3, "speed": "fast"}]
    server = start_server(faults=faults)
    client = client_for(server)
    outcome = []
    for i in range(6):
        ask(client)  # standard requests never match
        try:
            ask(client, speed="fast")
            outcome.append(i)
        except anthropic.InternalServerError:
            pass
    assert outcome == [0, 1, 3, 4]


def test_per_request_header_fault(start_server):
    server = start_server()
    client = client_for(server)
    header = {"x-mockserver-fault": json.dumps({"kind": "http_error", "status": 529})}
    with pytest.raises(anthropic.OverloadedError):
        ask(client, extra_headers=header)
    assert ask(client).usage.output_tokens == 20  # only that request
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client, extra_headers={"x-mockserver-fault": '{"kind": "explode"}'})
    assert "kind" in caught.value.api_message


def test_admin_faults_resource(start_server):
    server = start_server(
        faults=[{"name": "boot", "kind": "latency", "latency_seconds": 0, "model": "claude-haiku-4-5"}]
    )
    with AdminClient(server.url) as admin:
        created = admin.add_fault(name="burst", kind="http_error", status=529, count=2)
        assert created["source"] == "admin"
        assert [(f["name"], f["source"]) for f in admin.faults()] == [
            ("boot", "settings"),
            ("burst", "admin"),
        ]
        with pytest.raises(AdminError, match="already exists"):
            admin.add_fault(name="burst", kind="reset")
        with pytest.raises(AdminError, match="probability"):
            admin.add_fault(name="bad", kind="reset", probability=2)
        with pytest.raises(AdminError, match="settings"):
            admin.delete_fault("boot")
        client = client_for(server)
        for _ in range(2):
            with pytest.raises(anthropic.OverloadedError):
                ask(client)
        assert ask(client).usage.output_tokens == 20
        admin.delete_fault("burst")
        with pytest.raises(AdminError) as missing:
            admin.delete_fault("burst")
        assert missing.value.status == 404
        admin.add_fault(name="again", kind="http_error", status=500)
        admin.reset()
        assert [f["name"] for f in admin.faults()] == ["boot"]
    assert httpx.get(f"{server.url}/_admin/faults").status_code == 200
