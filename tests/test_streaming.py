"""`"stream": true` end to end: the SDK's accumulator, the raw wire, and pacing on a FakeClock.

Timing is never measured on the wall clock. Timed tests run the server on a `FakeClock` and step it
from deadline to deadline with `drive()`; a plain-socket client reads without blocking after each
step, so every event is stamped with the fake time at which it arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import anthropic
import anyio
import httpx
import orjson
import pytest

from mockserver import streaming
from mockserver.clock import FakeClock
from mockserver.events import reply_events
from mockserver.http_protocol import CoalescingTransport
from mockserver.replies import Reply, TextPart, Usage
from mockserver.routes import messages as messages_route
from mockserver.runtime import Runtime
from tests.conftest import make_settings

FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]
TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
THINKING = {"type": "enabled", "budget_tokens": 2048}
# Every token its own delta and no keepalives, unless a test says otherwise: exact schedules.
EXACT = {"time_scale": 1.0, "min_event_interval": 0.0, "ping_interval": 0.0}
SETTLE_TIMEOUT = 10.0
# A small epoch keeps fake timestamps exact to ~1e-13 s (at 1.8e9 s a float step is 2e-7 s).
T0 = 1000.0


# --- a plain-socket SSE client and a FakeClock driver --------------------------------------------


class RawStream:
    """A streaming POST /v1/messages on a socket that is read without blocking."""

    def __init__(self, url, body, *, headers=None):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port))
        payload = orjson.dumps({**body, "stream": True})
        head = {
            "host": parts.netloc,
            "content-type": "application/json",
            "content-length": str(len(payload)),
            "x-api-key": "sk-test",
            "anthropic-version": "2023-06-01",
            **(headers or {}),
        }
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        self.sock.sendall(f"POST /v1/messages HTTP/1.1\r\n{lines}\r\n".encode() + payload)
        self.sock.setblocking(False)
        self.raw = b""
        self.status_line = None
        self.headers = {}
        self.body = b""
        self.events = []  # (fake time of arrival, name, data)
        self.closed = False

    @property
    def finished(self):
        return self.closed or any(name == "message_stop" for _, name, _ in self.events)

    def poll(self, now):
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.raw += chunk
        self._parse(now)

    def close(self):
        self.sock.close()
        self.closed = True

    def _parse(self, now):
        if self.status_line is None:
            head, sep, rest = self.raw.partition(b"\r\n\r\n")
            if not sep:
                return
            status, *header_lines = head.decode().split("\r\n")
            self.status_line = status
            self.headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
            self.raw = rest
        while True:  # chunked transfer encoding
            size_line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break
            self.body += rest[:size]
            self.raw = rest[size + 2 :]
        while b"\n\n" in self.body:
            block, _, self.body = self.body.partition(b"\n\n")
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
            self.events.append((now, fields["event"], json.loads(fields["data"])))

    def deltas(self):
        return [(at, data) for at, name, data in self.events if name == "content_block_delta"]


def settle(clock, streams):
    """Wait until every live stream is asleep on the clock again, then read what it wrote.

    A stream writes before it goes back to sleep, a sleeper is counted only once the loop turn it
    slept in has ended (when the server's transport sends that turn's writes), and loopback delivers
    a write at once, so once the sleepers are back everything due so far is readable.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        for stream in streams:
            stream.poll(clock.now())
        live = sum(not stream.finished for stream in streams)
        if clock.pending_sleepers == live:
            for stream in streams:
                stream.poll(clock.now())
            return
        assert time.monotonic() < deadline, "the server did not settle"
        time.sleep(0.0005)


def drive(clock, streams, *, until=None):
    """Step the fake clock from deadline to deadline until the streams end (or `until()` holds)."""
    settle(clock, streams)
    while not all(stream.finished for stream in streams) and not (until and until()):
        clock.set(clock.next_deadline())
        settle(clock, streams)


def delta_text(data):
    delta = data["delta"]
    return delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""


def wait_for(predicate, message):
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.002)


@pytest.fixture
def finished(monkeypatch):
    """Token counts the route's streams report through `on_finish`, in order."""
    calls = []

    def recording(*args, on_finish=None, **kwargs):
        async def record(tokens):
            calls.append(tokens)
            if on_finish is not None:
                await on_finish(tokens)

        return streaming.stream_reply(*args, on_finish=record, **kwargs)

    monkeypatch.setattr(messages_route, "stream_reply", recording)
    return calls


# --- the SDK ------------------------------------------------------------------------------------

CASES = {
    "text": {"model": "claude-opus-4-7", "max_tokens": 512, "messages": HELLO},
    "tool_use": {
        "model": "claude-opus-4-7",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [TOOL],
        "tool_choice": {"type": "any"},
    },
    "text_then_tool": {
        "model": "claude-sonnet-4-6",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "call get_weather please"}],
        "tools": [TOOL],
    },
    "thinking": {"model": "claude-opus-4-7", "max_tokens": 4096, "messages": HELLO, "thinking": THINKING},
    "thinking_omitted": {
        "model": "claude-opus-4-7",
        "max_tokens": 4096,
        "messages": HELLO,
        "thinking": {**THINKING, "display": "omitted"},
    },
    "max_tokens": {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": HELLO},
}


def without_id(message):
    body = message.model_dump()
    body.pop("id")
    return body


@pytest.mark.parametrize("case", list(CASES))
def test_sdk_stream_accumulates_to_the_non_streaming_reply(client, case):
    request = CASES[case]
    with client.messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    plain = client.messages.create(**request)
    assert without_id(final) == without_id(plain)
    assert final.id != plain.id and final.id.startswith("msg_01")
    assert text == "".join(block.text for block in final.content if block.type == "text")
    assert final.usage.output_tokens > 0


def test_sdk_fast_stream_reports_speed_and_matches(client):
    request = {**CASES["text"], "speed": "fast", "betas": [FAST_BETA]}
    with client.beta.messages.stream(**request) as stream:
        final = stream.get_final_message()
    plain = client.beta.messages.create(**request)
    assert final.usage.speed == "fast"
    assert without_id(final) == without_id(plain)


def test_on_finish_gets_the_full_count_when_a_stream_completes(start_server, finished):
    server = start_server()
    client = anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0)
    with client.messages.stream(**CASES["thinking"]) as stream:
        final = stream.get_final_message()
    wait_for(lambda: finished, "on_finish was not called")
    assert finished == [final.usage.output_tokens]


# --- the raw wire -------------------------------------------------------------------------------


def sse(response):
    """(name, data) of each event, checking every event has an `event:` line matching its type."""
    events = []
    for block in response.text.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        name, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == name
        events.append((name, data))
    return events


def post(server, body, headers=None):
    all_headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", **(headers or {})}
    return httpx.post(f"{server.url}/v1/messages", json=body, headers=all_headers, timeout=SETTLE_TIMEOUT)


def post_stream(server, body, headers=None):
    return post(server, {**body, "stream": True}, headers)


def test_raw_stream_has_the_exact_anthropic_sequence(server):
    response = post_stream(server, CASES["text_then_tool"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["request-id"].startswith("req_")
    events = sse(response)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names[-1] == "message_stop" and names.count("message_stop") == 1
    assert names[-2] == "message_delta"
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["speed"] == "standard" and start["usage"]["input_tokens"] > 0

    first_block = names.index("content_block_start")
    assert "ping" in names[first_block:] and "ping" not in names[:first_block]
    starts = [data["index"] for name, data in events if name == "content_block_start"]
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert starts == stops == list(range(len(starts))) == [0, 1]
    open_block = None
    for name, data in events:  # deltas only inside their own block
        if name == "content_block_start":
            assert open_block is None
            open_block = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_block
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block = None
    plain = post(server, CASES["text_then_tool"]).json()
    output_tokens = events[-2][1]["usage"]["output_tokens"]
    assert output_tokens == plain["usage"]["output_tokens"]
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_thinking_streams_deltas_then_one_signature(server):
    events = sse(post_stream(server, CASES["thinking"]))
    block = [
        data["delta"]["type"] for name, data in events if name == "content_block_delta" and data["index"] == 0
    ]
    assert set(block[:-1]) == {"thinking_delta"} and block[-1] == "signature_delta"
    stop_at = next(i for i, (name, data) in enumerate(events) if name == "content_block_stop")
    assert events[stop_at - 1][1]["delta"]["type"] == "signature_delta"


def test_omitted_thinking_streams_only_a_signature(server):
    events = sse(post_stream(server, CASES["thinking_omitted"]))
    assert events[1][1]["content_block"]["type"] == "thinking"
    block = [data["delta"] for name, data in events if name == "content_block_delta" and data["index"] == 0]
    assert [delta["type"] for delta in block] == ["signature_delta"] and block[0]["signature"]
    usage = events[-2][1]["usage"]
    assert usage["output_tokens_details"]["thinking_tokens"] > 0


def test_tool_input_arrives_in_pieces_that_join_to_the_input(start_server):
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing=EXACT)
    stream = RawStream(server.url, CASES["tool_use"])
    drive(clock, [stream])
    pieces = [data["delta"]["partial_json"] for _, data in stream.deltas()]
    assert pieces[0] == ""  # as the real API starts a tool's input
    assert len([p for p in pieces if p]) > 3
    plain = post(start_server(), CASES["tool_use"]).json()  # the same reply as JSON, on the wall clock
    assert json.loads("".join(pieces)) == plain["content"][0]["input"]


# --- pacing on a FakeClock ----------------------------------------------------------------------


def test_fast_and_standard_differ_in_output_speed_not_in_time_to_first_token(start_server):
    clock = FakeClock(start=T0)
    timing = {**EXACT, "ttft_jitter": "uniform", "ttft_jitter_width": 0.5}
    server = start_server(clock=clock, timing=timing)
    measured = {}
    for speed in ("standard", "fast"):
        t0 = clock.now()
        stream = RawStream(
            server.url, {**CASES["text"], "speed": speed}, headers={"anthropic-beta": FAST_BETA}
        )
        drive(clock, [stream])
        assert stream.status_line == "HTTP/1.1 200 OK"
        assert [name for at, name, _ in stream.events if at == t0][:2] == [
            "message_start",
            "content_block_start",
        ]
        arrivals = [at for at, _ in stream.deltas()]
        assert len(arrivals) == stream.events[-2][2]["usage"]["output_tokens"]  # one token per delta
        ttft = arrivals[0] - t0
        otps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        measured[speed] = ttft, otps
    assert measured["standard"][0] == pytest.approx(measured["fast"][0], abs=1e-6)
    assert measured["standard"][0] != pytest.approx(1.2, abs=1e-3)  # the jitter moved it, for both
    assert measured["standard"][1] == pytest.approx(55.0, rel=1e-6)
    assert measured["fast"][1] / measured["standard"][1] == pytest.approx(2.5, rel=1e-6)


def test_what_a_stream_writes_before_sleeping_is_readable_once_it_sleeps(start_server, monkeypatch):
    # The server's transport sends a loop turn's writes at the turn's end, after the stream has gone
    # back to sleep on the clock; a slow end of turn must not let `settle` read too early (it did:
    # the first events then arrived stamped with the next deadline's time).
    flush = CoalescingTransport.flush

    def slow_flush(self):
        if any(b"event: message_start" in chunk for chunk in self._pending):  # the turn before the TTFT sleep
            time.sleep(0.05)
        flush(self)

    monkeypatch.setattr(CoalescingTransport, "flush", slow_flush)
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing=EXACT)
    stream = RawStream(server.url, CASES["text"])
    drive(clock, [stream])
    assert [name for at, name, _ in stream.events if at == T0][:2] == ["message_start", "content_block_start"]
    assert stream.events[-1][1] == "message_stop"


def test_non_streaming_waits_as_long_as_the_stream_takes(start_server):
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing={**EXACT, "ttft_jitter": "lognormal", "ttft_jitter_width": 0.5})
    t0 = clock.now()
    stream = RawStream(server.url, CASES["text"])
    drive(clock, [stream])
    last_token = stream.deltas()[-1][0] - t0

    t1 = clock.now()
    result = {}
    request = threading.Thread(target=lambda: result.update(response=post(server, CASES["text"])))
    request.start()
    wait_for(lambda: clock.pending_sleepers == 1, "the JSON reply did not wait on the clock")
    assert clock.next_deadline() - t1 == pytest.approx(last_token, abs=1e-9)
    assert "response" not in result
    clock.set(clock.next_deadline())
    request.join(SETTLE_TIMEOUT)
    assert result["response"].status_code == 200


def test_tokens_due_within_the_minimum_interval_share_a_delta(start_server):
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing={**EXACT, "min_event_interval": 0.05})
    stream = RawStream(server.url, {**CASES["text"], "speed": "fast"}, headers={"anthropic-beta": FAST_BETA})
    drive(clock, [stream])
    arrivals = [at for at, _ in stream.deltas()]
    texts = [delta_text(data) for _, data in stream.deltas()]
    total = stream.events[-2][2]["usage"]["output_tokens"]
    assert len(texts) < total / 3  # 1/137.5 s per token: about seven tokens per 50 ms
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(arrivals[:-1]))  # but the block's tail
    client = anthropic.Anthropic(api_key="sk-test", base_url=start_server().url, max_retries=0)
    plain = client.beta.messages.create(**CASES["text"], speed="fast", betas=[FAST_BETA])
    assert "".join(texts) == plain.content[0].text


def test_pings_arrive_while_waiting_for_the_first_token(start_server):
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing={**EXACT, "ping_interval": 0.25})
    t0 = clock.now()
    stream = RawStream(server.url, CASES["text"])
    drive(clock, [stream])
    first_delta = stream.deltas()[0][0]
    assert first_delta - t0 == pytest.approx(1.2)
    early_pings = [round(at - t0, 6) for at, name, _ in stream.events if name == "ping" and at < first_delta]
    assert early_pings == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_late_writer_sends_what_is_due_as_one_delta_per_block(start_server):
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing=EXACT)
    stream = RawStream(server.url, CASES["text_then_tool"])
    settle(clock, [stream])
    clock.advance(60.0)  # the whole reply falls due at once
    settle(clock, [stream])
    assert stream.finished
    kinds = [(data["index"], data["delta"]["type"]) for _, data in stream.deltas()]
    assert kinds == [(0, "text_delta"), (1, "input_json_delta")]
    assert stream.deltas()[0][1]["delta"]["text"]


def test_a_client_that_disconnects_stops_the_stream_and_it_reports_what_was_sent(start_server, finished):
    clock = FakeClock(start=T0)
    server = start_server(clock=clock, timing={**EXACT, "pace_non_streaming": False})
    stream = RawStream(server.url, CASES["thinking"])
    drive(clock, [stream], until=lambda: len(stream.deltas()) >= 5)
    received = sum(1 for _, data in stream.deltas() if data["delta"]["type"] == "thinking_delta")
    assert clock.pending_sleepers == 1
    stream.close()
    wait_for(lambda: finished, "on_finish was not called after the disconnect")
    assert finished == [received]
    # uvicorn keeps one task per request in flight; none may outlive its client.
    wait_for(lambda: not server._server.server_state.tasks, "a request task outlived its client")
    # FakeClock keeps a cancelled sleeper in its heap until its deadline passes (clock.py skips the
    # cleanup because Task.cancel() has already cancelled the future); passing it must wake nothing.
    if clock.pending_sleepers:
        clock.set(clock.next_deadline())
    assert clock.pending_sleepers == 0

    # The server still serves (pace_non_streaming is off here), and the whole reply was longer.
    assert post(server, CASES["thinking"]).json()["usage"]["output_tokens"] > received
    assert finished == [received]  # exactly once
    assert clock.pending_sleepers == 0


# --- stream_reply on its own --------------------------------------------------------------------


def tiny_setup(**timing):
    settings = make_settings(timing={**EXACT, **timing})
    runtime = Runtime.from_settings(settings)
    model = runtime.catalog.resolve("claude-opus-4-7")
    reply = Reply(
        "claude-opus-4-7",
        (TextPart(tuple(f" t{i}" for i in range(20))),),
        "end_turn",
        None,
        Usage(3, 20, "standard"),
    )
    return runtime, model, reply


def test_stream_reply_reports_the_full_count_once_on_completion():
    runtime, model, reply = tiny_setup()
    calls = []

    async def record(tokens):
        calls.append(tokens)

    async def main():
        clock = FakeClock(start=T0)
        chunks = []
        consumer = asyncio.create_task(
            consume(streaming.stream_reply(reply, "msg_1", runtime, clock, model, on_finish=record), chunks)
        )
        while not consumer.done():
            await asyncio.sleep(0)
            if clock.next_deadline() is not None:
                clock.set(clock.next_deadline())
        return b"".join(chunks)

    body = asyncio.run(main())
    assert calls == [20]
    assert body.count(b"event: content_block_delta") == 20
    expected = b"".join(
        b"event: " + e.name.encode() + b"\ndata: " + orjson.dumps(e.data) + b"\n\n"
        for e in reply_events(reply, "msg_1")
    )
    assert body == expected


async def consume(stream, chunks):
    async for chunk in stream:
        chunks.append(chunk)


def test_an_anyio_cancel_mid_stream_still_reports_the_partial_count():
    # Starlette cancels a stream through an anyio task group, which re-cancels every await in the
    # cancelled scope; the report must survive that (it awaits twice here on purpose).
    runtime, model, reply = tiny_setup()
    calls = []

    async def record(tokens):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        calls.append(tokens)

    async def main():
        clock = FakeClock(start=T0)
        chunks = []
        async with anyio.create_task_group() as group:
            group.start_soon(
                consume,
                streaming.stream_reply(reply, "msg_1", runtime, clock, model, on_finish=record),
                chunks,
            )
            while sum(chunk.count(b"text_delta") for chunk in chunks) < 7:
                await asyncio.sleep(0)
                if clock.next_deadline() is not None:
                    clock.set(clock.next_deadline())
            group.cancel_scope.cancel()
        return clock

    clock = asyncio.run(main())
    assert calls == [7]
    assert clock.pending_sleepers == 0


def test_closing_the_generator_at_a_yield_reports_the_partial_count():
    runtime, model, reply = tiny_setup(ping_interval=0.0)
    calls = []

    async def record(tokens):
        calls.append(tokens)

    async def main():
        clock = FakeClock(start=T0)
        stream = streaming.stream_reply(reply, "msg_1", runtime, clock, model, on_finish=record)
        await anext(stream)  # message_start, block start, ping: no tokens yet
        clock.advance(1.2 + 2.5 / 55)  # tokens 0, 1 and 2 are due
        await anext(stream)
        await stream.aclose()

    asyncio.run(main())
    assert calls == [3]


def test_generation_seconds_matches_the_pace_of_the_stream():
    runtime, model, reply = tiny_setup(ttft_jitter="normal", ttft_jitter_width=0.3)
    pace = streaming.reply_pace(reply, runtime, model)
    assert pace.ttft != 1.2
    assert streaming.generation_seconds(reply, runtime, model) == pytest.approx(pace.ttft + 19 / 55)
    fast = Reply(reply.model, reply.parts, reply.stop_reason, None, Usage(3, 20, "fast"))
    assert streaming.reply_pace(fast, runtime, model).ttft == pace.ttft  # the same draw at both speeds
