"""Fake-clock servers under the plugin: `fake_clock="auto"` moves the clock by itself; a request left
waiting on a clock the test never advances fails the test within seconds, saying what to do."""

from __future__ import annotations

import re
import socket
import time

pytest_plugins = ["pytester"]

INNER = """
import threading
import time

import pytest

MODEL = "claude-opus-4-7"
FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]


def stream_text(client, **extra):
    with client.messages.stream(model=MODEL, max_tokens=200, messages=HELLO, **extra) as stream:
        return "".join(stream.text_stream)


# Real-life latency (time_scale 1): seconds of modelled time, run through without waiting for them.
@pytest.mark.mockserver(fake_clock="auto", timing={"time_scale": 1})
def test_auto_streams_run_through(mockserver, anthropic_client):
    started, real = mockserver.clock.now(), time.monotonic()
    assert stream_text(anthropic_client)
    row = mockserver.last_request()
    assert row["status"] == 200 and row["ttft_seconds"] > 0.2  # modelled, on the fake clock
    assert mockserver.clock.now() - started >= row["duration_seconds"] > 1
    assert time.monotonic() - real < row["duration_seconds"]  # faster than the modelled time


@pytest.mark.mockserver(fake_clock="auto", timing={"time_scale": 1, "pace_non_streaming": True})
def test_auto_paced_replies_and_latency_faults_run_through(mockserver, anthropic_client):
    mockserver.admin.add_fault(name="slow", kind="latency", latency_seconds=30, count=1)
    started = mockserver.clock.now()
    anthropic_client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert mockserver.clock.now() - started > 30  # the fault's 30 s and the reply's generation
    assert mockserver.last_request()["fault"] == "slow"


@pytest.mark.mockserver(fake_clock="auto", timing={"time_scale": 1})
def test_auto_a_scripted_reply_is_paced_at_its_speed(mockserver, anthropic_client):
    text = "A scripted answer of a dozen words or so, paced like any other reply."
    mockserver.reply_sequence([text, text])
    assert stream_text(anthropic_client) == text
    assert stream_text(anthropic_client.beta, speed="fast", betas=[FAST_BETA]) == text
    standard, fast = mockserver.assert_requests(count=2, scripted=True)
    assert fast["speed"] == "fast" and standard["speed"] == "standard"
    assert fast["duration_seconds"] < standard["duration_seconds"]


@pytest.mark.mockserver(fake_clock=True)
def test_manual_driving_is_left_alone(mockserver, anthropic_client):
    clock = mockserver.clock
    result = []
    reader = threading.Thread(target=lambda: result.append(stream_text(anthropic_client)))
    reader.start()
    while reader.is_alive():  # the test steps the clock itself, deadline by deadline
        deadline = clock.next_deadline()
        if deadline is not None:
            clock.set(deadline)
        time.sleep(0.001)
    assert result and result[0]


@pytest.mark.mockserver(fake_clock=True)
def test_auto_advance_can_be_switched_on(mockserver, anthropic_client):
    mockserver.auto_advance()
    assert stream_text(anthropic_client)


@pytest.mark.mockserver(fake_clock=True)
def test_frozen_clock_stream_fails_fast(mockserver, anthropic_client):
    assert stream_text(anthropic_client)  # ends: the stall is noted, then the clock moves


@pytest.mark.mockserver(fake_clock=True)
def test_frozen_clock_note_on_a_failing_test(mockserver, anthropic_client):
    stream_text(anthropic_client)
    assert False, "the test's own failure"


def test_auto_advance_needs_a_fake_clock(mockserver):
    with pytest.raises(RuntimeError, match="auto_advance needs a fake clock"):
        mockserver.auto_advance()


@pytest.mark.mockserver(fake_clock="sometimes")
def test_bad_fake_clock_value(mockserver):
    pass
"""


def test_auto_advance_and_stalls(pytester):
    pytester.makepyfile(test_clock=INNER)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "timeout", "--timeout=60", "-rfE")
    result.assert_outcomes(passed=6, failed=2, errors=1)
    assert time.monotonic() - started < 50  # two stalls of ~2 s each, not the SDK's 10-minute timeout
    out = result.stdout.str()
    stall = (
        "*FakeClockStalled: mockserver at http://127.0.0.1:*: 1 request(s) waited 2 s on the server's fake "
        "clock, which the test did not advance (it stood at *; the next deadline is * s ahead). Advance it "
        "in the test (mockserver.clock.advance(seconds), or mockserver.clock.set("
        "mockserver.clock.next_deadline())), or let it move to each deadline by itself: "
        '@pytest.mark.mockserver(fake_clock="auto") or mockserver.auto_advance(). It was advanced '
        "automatically from then on, so that the test could end.*"
    )
    result.stdout.fnmatch_lines(["*_ test_frozen_clock_stream_fails_fast _*", "*", stall.replace("[", "[[]")])
    own = out.split(" test_frozen_clock_note_on_a_failing_test ")[1].split("short test summary")[0]
    assert "AssertionError: the test's own failure" in own  # the test's failure, the stall as a note
    assert "1 request(s) waited 2 s on the server's fake clock" in own
    result.stdout.fnmatch_lines(
        ['*test_clock.py::test_bad_fake_clock_value: fake_clock must be True, False or "auto", got *']
    )


HELD = """
import threading
import time

import anthropic
import pytest

HELLO = [{"role": "user", "content": "Hello"}]


def stream_in_the_background(mockserver):
    # A client of its own, which the plugin does not close: the stream is still asleep at teardown.
    client = anthropic.Anthropic(api_key="test", base_url=mockserver.url, max_retries=0)

    def read():
        with client.messages.stream(model="claude-opus-4-7", max_tokens=200, messages=HELLO) as stream:
            for _ in stream.text_stream:
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while mockserver.clock.pending_sleepers == 0:
        time.sleep(0.001)
    return reader


@pytest.mark.mockserver(fake_clock=True, fake_clock_stall=10)
def test_a_clock_held_longer_than_the_default_stall_time(mockserver):
    reader = stream_in_the_background(mockserver)
    time.sleep(2.5)  # holding the clock on purpose, past the default 2 s
    while reader.is_alive():  # then stepping it, deadline by deadline
        deadline = mockserver.clock.next_deadline()
        if deadline is not None:
            mockserver.clock.set(deadline)
        time.sleep(0.001)


@pytest.mark.mockserver(fake_clock=True, fake_clock_stall=0.3)
def test_a_shorter_stall_time(mockserver):
    stream_in_the_background(mockserver).join()  # ends: the stall is noted after 0.3 s


@pytest.mark.mockserver(fake_clock=True)
def test_a_stream_left_asleep_at_teardown(mockserver):
    stream_in_the_background(mockserver)


@pytest.mark.mockserver(fake_clock=True, fake_clock_stall=0)
def test_a_bad_stall_time(mockserver):
    pass
"""


def test_the_stall_time_is_settable_and_teardown_does_not_wait_for_sleepers(pytester):
    pytester.makepyfile(test_held=HELD)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "timeout", "--timeout=60", "-rfE", "--durations=0", "-vv"
    )
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*FakeClockStalled: *: 1 request(s) waited 0.3 s on the server's fake clock*"]
    )
    bad = (
        "*test_a_bad_stall_time: fake_clock_stall must be a number of seconds above 0, or None (never), got 0"
    )
    result.stdout.fnmatch_lines([bad])
    teardowns = {
        match.group(2): float(match.group(1))
        for match in re.finditer(r"([\d.]+)s teardown +test_held\.py::(\w+)", result.stdout.str())
    }
    # The server stops at once, not after uvicorn's 5 s of graceful shutdown for the sleeping stream.
    assert teardowns.get("test_a_stream_left_asleep_at_teardown", 0.0) < 2.0, teardowns


def test_the_clock_driver_sleeps_while_a_request_runs_without_waiting_on_the_clock(
    mockserver_factory, monkeypatch
):
    from mockserver.server import MockServer

    handle = mockserver_factory(fake_clock=True)
    in_flight = MockServer.requests_in_flight.fget
    looks = 0

    def counted(server: MockServer) -> int:
        nonlocal looks
        looks += 1
        return in_flight(server)

    monkeypatch.setattr(MockServer, "requests_in_flight", property(counted))
    host, port = handle.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        # A request in flight, its body still on the way: nothing waits on the clock meanwhile.
        head = "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: test\r\nanthropic-version: 2023-06-01"
        sock.sendall(f"{head}\r\ncontent-length: 10\r\n\r\n{{".encode())
        while in_flight(handle.server) == 0:
            time.sleep(0.001)
        looks = 0
        time.sleep(0.5)
        counted_in_half_a_second = looks
    # The driver looked every 0.5 ms while any request was in flight: ~1000 times here.
    assert counted_in_half_a_second <= 60
