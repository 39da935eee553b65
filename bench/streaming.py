"""Streaming benchmarks: SSE overhead, 1,000 paced fast streams, memory per stream, a token-arrival plot.

    python bench/streaming.py

Every server is a subprocess running one uvicorn worker on loopback, built the way `mockserver serve`
builds it; this process is the client (a small asyncio HTTP/1.1 reader, no SDK, so the client is
cheap next to the server). Targets print PASS/MISS with their figures; ratios compare against a
baseline measured in the same run. Takes about a minute; the plot goes to bench/out/.

(a) unpaced: mockserver with an injected clock that never moves and never sleeps (all pacing
    machinery runs, nothing waits) against a bare Starlette StreamingResponse yielding the same
    pre-encoded events; SSE events per second, best of the rounds. Also CPU per event in-process
    (no sockets) for both apps and for `stream_reply` alone, to show where the difference lies.
(b) 1,000 concurrent fast streams of 300 tokens at 25 tokens/s, requests spread over 1 s: per-stream
    delivered tokens/s from first to last delta, and each delta's lateness against the ideal
    schedule (token k due at anchor + k / otps, the anchor being the earliest the stream's arrivals
    allow, so lateness >= 0). Run at the default min_event_interval and at 120 ms.
(c) server RSS with 1,000 streams open and waiting for their first token, minus RSS before, / 1,000.
(d) token arrival over time, standard vs fast on one model: bench/out/token_arrival.svg.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from mockserver.tokens import split_tokens

OUT = Path(__file__).resolve().parent / "out"
HEADERS = b"x-api-key: sk-bench\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"

TTFT = 1.0
STANDARD_OTPS = 10.0
FAST_MULTIPLIER = 2.5
FAST_OTPS = STANDARD_OTPS * FAST_MULTIPLIER
STREAMS = 1_000
STREAM_TOKENS = 300
LONG_TOKENS = 2_000
PLOT_TOKENS = 60
RAMP_SECONDS = 1.0  # the 1,000 requests arrive over the first second, not in one burst
# (b) runs twice: at the default min_event_interval (10 ms: one token per delta at 25 tokens/s) and at
# 120 ms (three tokens per delta), to show what the frame rate costs one worker.
PACED_RUNS = {"default 10 ms frames": None, "120 ms frames": 0.12}
UNPACED_SECONDS = 2.0
UNPACED_ROUNDS = 5
UNPACED_CONNECTIONS = 4
IN_PROCESS_REPEATS = 20


# --- the servers (run in subprocesses) ----------------------------------------------------------


class InstantClock:
    """Time stands still and every sleep returns at once: streaming with the waiting taken out."""

    def __init__(self) -> None:
        self._now = time.time()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        return None

    async def sleep(self, seconds: float) -> None:
        return None


def bare_app(events_file):
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    events = [block + b"\n\n" for block in Path(events_file).read_bytes().split(b"\n\n") if block]

    async def messages(request):
        await request.body()

        async def body():
            for event in events:
                yield event

        headers = {"request-id": "req_bench", "cache-control": "no-cache"}
        return StreamingResponse(body(), media_type="text/event-stream; charset=utf-8", headers=headers)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def serve(config_file):
    import uvicorn

    from mockserver.app import create_app
    from mockserver.server import bind_socket, uvicorn_config
    from mockserver.settings import Layer, build_settings

    raise_fd_limit()
    config = json.loads(Path(config_file).read_text())
    if config["kind"] == "bare":
        app = bare_app(config["events"])
    else:
        settings = build_settings([Layer("bench", config["settings"])])
        app = create_app(settings, clock=InstantClock() if config["kind"] == "instant" else None)
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    # The baseline is Starlette on stock uvicorn unless asked for mockserver's coalescing transport.
    stock = {"http": "auto"} if config["kind"] == "bare" and not config.get("coalescing") else {}
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", **stock))

    def exit_when_stdin_closes():  # the parent's way to stop us without a signal
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    profile = os.environ.get("BENCH_PROFILE")  # a file name: where the server's cProfile stats go
    if profile:
        import cProfile

        cProfile.runctx("server.run(sockets=[sock])", globals(), locals(), profile)
    else:
        server.run(sockets=[sock])  # uvicorn's loop factory (uvloop when installed), as `mockserver serve`


class Server:
    """A server subprocess; `port`, `rss_kib()`, `cpu_seconds()`, `open_fds()`; stop() ends it."""

    def __init__(self, name, config):
        self.name = name
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"server {name} did not start")
        self.port = int(line)

    def rss_kib(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self):
        self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * STREAMS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * STREAMS), hard))


def words(tokens):
    """Deterministic English-looking text of exactly `tokens` tokens."""
    vocabulary = ["stream", "token", "speed", "fast", "mode", "reply", "model", "client", "server", "delta"]
    pieces = ["Bench"]
    while len(pieces) < tokens:
        pieces.append("." if len(pieces) % 12 == 11 else " " + vocabulary[len(pieces) % len(vocabulary)])
    text = "".join(pieces)
    assert len(split_tokens(text)) == tokens
    return text


def mock_settings(replies, min_event_interval=None):
    model = {
        "display_name": "Bench",
        "speeds": ["standard", "fast"],
        "output_tokens_per_second": STANDARD_OTPS,
        "fast_multiplier": FAST_MULTIPLIER,
        "max_tokens": 8_192,
    }
    return {
        "replies": [str(replies)],
        "models": [
            {**model, "id": "bench-model", "ttft_seconds": TTFT},
            {**model, "id": "bench-idle", "ttft_seconds": 3_600.0},  # streams that stay open
        ],
        "timing": {
            "time_scale": 1.0,
            **({} if min_event_interval is None else {"min_event_interval": min_event_interval}),
        },
        # The bench measures streaming, not admission: 1,000 x 300 fast tokens exceed a minute's limit.
        "limits": {"enabled": False},
        "cache": {"enabled": False},
        "log": {"access": False},
    }


# --- the client ---------------------------------------------------------------------------------


class Stream:
    def __init__(self):
        self.sent_at = time.monotonic()
        self.status = None
        self.events = 0
        self.started_at = None  # arrival of message_start
        self.deltas = []  # (arrival, text characters so far)
        self.body = bytearray()


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection reading chunked SSE responses, stamping delta arrivals."""

    def __init__(self, *, record=False, keep_body=False):
        self.record = record
        self.keep_body = keep_body
        self.transport = None
        self.buffer = bytearray()
        self.sse = b""
        self.chars = 0
        self.stream = None
        self.done = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("server closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)

    def post(self, payload):
        self.stream, self.buffer, self.sse, self.chars = Stream(), bytearray(), b"", 0
        self.done = asyncio.get_running_loop().create_future()
        head = b"POST /v1/messages HTTP/1.1\r\nhost: bench\r\n" + HEADERS
        self.transport.write(head + b"content-length: %d\r\n\r\n" % len(payload) + payload)
        return self.done

    def data_received(self, data):
        now = time.monotonic()
        self.buffer += data
        stream = self.stream
        if stream.status is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            stream.status = int(self.buffer[9:12])
            del self.buffer[: end + 4]
        at, body, finished = 0, [], False
        while True:  # chunked transfer encoding
            line_end = self.buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(self.buffer[at:line_end], 16)
            if size == 0:
                finished = True
                at = line_end + 4
                break
            if len(self.buffer) < line_end + 4 + size:
                break
            body.append(bytes(self.buffer[line_end + 2 : line_end + 2 + size]))
            at = line_end + 4 + size
        del self.buffer[:at]
        if body:
            self._events(now, b"".join(body))
        if finished:
            self.done.set_result(stream)

    def _events(self, now, chunk):
        stream = self.stream
        if self.keep_body:
            stream.body += chunk
        blocks = (self.sse + chunk).split(b"\n\n")
        self.sse = blocks.pop()
        stream.events += len(blocks)
        if not self.record:
            return
        for block in blocks:
            if block.startswith(b"event: content_block_delta"):
                delta = orjson.loads(block[block.index(b"data: ") + 6 :])["delta"]
                self.chars += len(delta.get("text", ""))
                stream.deltas.append((now, self.chars))
            elif block.startswith(b"event: message_start"):
                stream.started_at = now


async def connect(port, **options):
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: Connection(**options), "127.0.0.1", port)
    return protocol


def request(model, prompt, max_tokens, *, speed=None):
    body = {"model": model, "max_tokens": max_tokens, "stream": True}
    body["messages"] = [{"role": "user", "content": prompt}]
    if speed:
        body["speed"] = speed
    return orjson.dumps(body)


# --- (a) unpaced overhead -----------------------------------------------------------------------


async def events_per_second(port, payload, seconds):
    connections = [await connect(port) for _ in range(UNPACED_CONNECTIONS)]
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    counted = 0

    async def worker(connection):
        nonlocal counted
        while loop.time() < end:
            stream = await connection.post(payload)
            assert stream.status == 200, stream.status
            counted += stream.events

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.transport.close()
    return counted / elapsed


async def call_asgi(app, payload):
    """One request straight into an ASGI app, no sockets; the response body is thrown away."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(b"x-api-key", b"sk-bench"), (b"anthropic-version", b"2023-06-01")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }
    body_sent = False

    async def receive():
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away

    async def send(message):
        return None

    await app(scope, receive, send)


async def in_process_costs(replies, payload, events_file, events):
    """CPU microseconds per event without sockets: bare app, mockserver app, and stream_reply alone."""
    from mockserver import streaming
    from mockserver.app import create_app
    from mockserver.settings import Layer, build_settings

    settings = build_settings([Layer("bench", mock_settings(replies))])
    apps = {"bare": bare_app(events_file), "mock": create_app(settings, clock=InstantClock())}
    runtime = apps["mock"].state.mock.runtime
    model = runtime.catalog.resolve("bench-model")
    raw = orjson.loads(payload)
    reply = runtime.planner.plan(raw, model=model.id, speed="standard", input_tokens=10)
    costs = {}
    for name, app in apps.items():
        started = time.process_time()
        for _ in range(IN_PROCESS_REPEATS):
            await call_asgi(app, payload)
        costs[name] = (time.process_time() - started) / (IN_PROCESS_REPEATS * events) * 1e6
    started = time.process_time()
    for _ in range(IN_PROCESS_REPEATS):
        async for _ in streaming.stream_reply(reply, "msg_bench", runtime, InstantClock(), model):
            pass
    costs["pipeline"] = (time.process_time() - started) / (IN_PROCESS_REPEATS * events) * 1e6
    return costs


async def bench_unpaced(replies):
    payload = request("bench-model", "bench-long", LONG_TOKENS + 10)
    mock = Server("unpaced-mock", {"kind": "instant", "settings": mock_settings(replies)})
    try:
        probe = await connect(mock.port, keep_body=True)
        sample = await probe.post(payload)
        probe.transport.close()
        events_file = OUT / "unpaced-events.sse"
        events_file.write_bytes(bytes(sample.body))
        bare = Server("unpaced-bare", {"kind": "bare", "events": str(events_file)})
        # The same bare app on mockserver's transport (http_protocol.py), to show what that part is worth.
        joined = Server(
            "unpaced-bare-coalescing", {"kind": "bare", "events": str(events_file), "coalescing": True}
        )
        try:
            rates = {"bare": [], "mock": [], "bare_coalescing": []}
            for _ in range(UNPACED_ROUNDS):  # interleaved, so a noisy moment hits all
                rates["bare"].append(await events_per_second(bare.port, payload, UNPACED_SECONDS))
                rates["mock"].append(await events_per_second(mock.port, payload, UNPACED_SECONDS))
                rates["bare_coalescing"].append(
                    await events_per_second(joined.port, payload, UNPACED_SECONDS)
                )
        finally:
            bare.stop()
            joined.stop()
    finally:
        mock.stop()
    costs = await in_process_costs(replies, payload, events_file, sample.events)
    return {name: max(values) for name, values in rates.items()}, sample.events, costs


# --- (b) 1,000 paced fast streams, (d) the plot --------------------------------------------------


async def open_streams(port, payloads, *, ramp=0.0, **options):
    """Connect (at most 64 connects in flight), then send the requests spread over `ramp` seconds."""
    limit = asyncio.Semaphore(64)

    async def one():
        async with limit:
            return await connect(port, **options)

    connections = await asyncio.gather(*(one() for _ in payloads))
    loop = asyncio.get_running_loop()
    started = loop.time()
    pairs = []
    for index, (connection, payload) in enumerate(zip(connections, payloads, strict=True)):
        await asyncio.sleep(max(0.0, started + ramp * index / len(payloads) - loop.time()))
        pairs.append((connection, connection.post(payload)))
    return pairs


def token_boundaries(text):
    ends, total = [], 0
    for piece in split_tokens(text):
        total += len(piece)
        ends.append(total)
    return ends


def stream_figures(stream, ends, otps):
    """(delivered tokens/s, lateness of each delta) from a stream's delta arrivals."""
    points = [(at, bisect.bisect_left(ends, chars)) for at, chars in stream.deltas]  # (arrival, last token)
    (first_at, first_k), (last_at, last_k) = points[0], points[-1]
    delivered = (last_k - first_k) / (last_at - first_at)
    anchor = min(at - k / otps for at, k in points)
    return delivered, [at - (anchor + k / otps) for at, k in points]


def machine_busy_seconds():
    """CPU seconds all processes (and the kernel) spent busy so far, summed over cpus."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


async def bench_paced(server, text):
    ends = token_boundaries(text)
    payload = request("bench-model", "bench-300", STREAM_TOKENS, speed="fast")
    cpu_before, client_before, busy_before = server.cpu_seconds(), time.process_time(), machine_busy_seconds()
    started = time.monotonic()
    # The client's own garbage collector would stamp late arrivals on the server's account: its
    # heap of recorded arrivals grows to 100k+ tuples, and a full collection pauses it for tens of ms.
    gc.collect()
    gc.disable()
    try:
        pairs = await open_streams(server.port, [payload] * STREAMS, ramp=RAMP_SECONDS, record=True)
        streams = await asyncio.gather(*(done for _, done in pairs))
    finally:
        gc.enable()
    wall = time.monotonic() - started
    cpu, client_cpu = server.cpu_seconds() - cpu_before, time.process_time() - client_before
    busy = machine_busy_seconds() - busy_before
    for connection, _ in pairs:
        connection.transport.close()
    assert all(s.status == 200 and s.deltas[-1][1] == len(text) for s in streams), "a stream failed"
    rates, lateness, ttfts = [], [], []
    for stream in streams:
        rate, late = stream_figures(stream, ends, FAST_OTPS)
        rates.append(rate)
        lateness.extend(late)
        ttfts.append(stream.deltas[0][0] - stream.sent_at)
    return {
        "rates": rates,
        "lateness": lateness,
        "ttfts": ttfts,
        "events": sum(s.events for s in streams),
        "deltas": sum(len(s.deltas) for s in streams),
        "wall": wall,
        "cpu": cpu,
        "client_cpu": client_cpu,
        "other_cpu": busy - cpu - client_cpu,
    }


def paced_rows(label, paced):
    deviations = sorted(abs(rate / FAST_OTPS - 1) for rate in paced["rates"])
    median_rate = statistics.median(paced["rates"])
    within_5 = sum(d <= 0.05 for d in deviations) / len(deviations)
    late = paced["lateness"]
    p99 = percentile(late, 0.99)
    return [
        (
            f"(b) {label}: median tokens/s per stream",
            f"{median_rate:.2f} of {FAST_OTPS:g} ({median_rate / FAST_OTPS - 1:+.2%})",
            "within 2%",
            verdict(abs(median_rate / FAST_OTPS - 1) <= 0.02),
        ),
        (
            f"(b) {label}: streams within 5%",
            f"{within_5:.1%} (p95 deviation {percentile(deviations, 0.95):.2%})",
            ">= 95%",
            verdict(within_5 >= 0.95),
        ),
        (
            f"(b) {label}: p99 event lateness",
            f"{p99 * 1000:.1f} ms (p50 {percentile(late, 0.5) * 1000:.1f}, max {max(late) * 1000:.1f})",
            "< 25 ms",
            verdict(p99 < 0.025),
        ),
    ]


def paced_note(label, paced):
    return (
        f"(b) {label}: {paced['wall']:.1f} s wall; CPU seconds: server {paced['cpu']:.1f} "
        f"({paced['cpu'] / paced['wall']:.0%} of a core), bench client {paced['client_cpu']:.1f}, "
        f"everything else on the machine {max(paced['other_cpu'], 0):.1f}; {paced['deltas']:,} deltas "
        f"({paced['deltas'] / (STREAMS * STREAM_TOKENS):.2f} per token); TTFT seen by the client "
        f"p50 {percentile(paced['ttfts'], 0.5):.3f} s, p99 {percentile(paced['ttfts'], 0.99):.3f} s"
    )


async def plot_arrivals(server, text):
    ends = token_boundaries(text)
    payloads = [request("bench-model", "bench-300", PLOT_TOKENS, speed=s) for s in ("standard", "fast")]
    pairs = await open_streams(server.port, payloads, record=True)
    series = {}
    for speed, (connection, done) in zip(("standard", "fast"), pairs, strict=True):
        stream = await done
        connection.transport.close()
        series[speed] = [(at - stream.sent_at, bisect.bisect_left(ends, c) + 1) for at, c in stream.deltas]
    path = OUT / "token_arrival.svg"
    path.write_text(svg_plot(series))
    (OUT / "token_arrival.json").write_text(json.dumps(series))
    return path, series


def svg_plot(series):
    """A step plot of output tokens received over time, one line per speed, as plain SVG."""
    width, height, left, right, top, bottom = 760, 440, 70, 30, 50, 60
    t_max = max(at for points in series.values() for at, _ in points) * 1.05
    k_max = max(k for points in series.values() for _, k in points)

    def x(t):
        return left + (width - left - right) * t / t_max

    def y(k):
        return height - bottom - (height - top - bottom) * k / k_max

    colours = {"standard": "#1f77b4", "fast": "#e6550d"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="28" text-anchor="middle" font-size="16">Token arrival, bench-model: '
        f"TTFT {TTFT:g} s, {STANDARD_OTPS:g} vs {FAST_OTPS:g} output tokens/s (measured)</text>",
        f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="black"/>',
        f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{top}" stroke="black"/>',
    ]
    step = 1 if t_max < 12 else 2
    for second in range(0, int(t_max) + 1, step):
        out.append(f'<line x1="{x(second)}" y1="{y(0)}" x2="{x(second)}" y2="{y(0) + 5}" stroke="black"/>')
        out.append(
            f'<text x="{x(second)}" y="{y(0) + 20}" text-anchor="middle" font-size="12">{second}</text>'
        )
    for k in range(0, k_max + 1, 10):
        out.append(f'<line x1="{left - 5}" y1="{y(k)}" x2="{left}" y2="{y(k)}" stroke="black"/>')
        out.append(f'<text x="{left - 8}" y="{y(k) + 4}" text-anchor="end" font-size="12">{k}</text>')
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 15}" text-anchor="middle" font-size="13">'
        "seconds since the request was sent</text>"
    )
    out.append(
        f'<text x="18" y="{(top + height - bottom) / 2}" text-anchor="middle" font-size="13" '
        f'transform="rotate(-90 18 {(top + height - bottom) / 2})">output tokens received</text>'
    )
    for row, (speed, points) in enumerate(series.items()):
        path = [f"M{x(0):.1f},{y(0):.1f}"]
        for at, k in points:
            path.append(f"H{x(at):.1f}V{y(k):.1f}")
        out.append(f'<path d="{"".join(path)}" fill="none" stroke="{colours[speed]}" stroke-width="2"/>')
        legend_y = top + 10 + 20 * row
        out.append(
            f'<line x1="{left + 20}" y1="{legend_y}" x2="{left + 50}" y2="{legend_y}" '
            f'stroke="{colours[speed]}" stroke-width="3"/>'
        )
        out.append(f'<text x="{left + 58}" y="{legend_y + 4}" font-size="13">{speed}</text>')
    out.append("</svg>")
    return "\n".join(out)


# --- (c) memory per open stream ------------------------------------------------------------------


async def bench_memory(server):
    warm = await connect(server.port, record=True)
    await warm.post(request("bench-model", "bench-300", 5))  # imports and caches of the stream path
    warm.transport.close()
    await asyncio.sleep(0.5)
    rss_before, fds_before = server.rss_kib(), server.open_fds()
    payload = request("bench-idle", "bench-300", STREAM_TOKENS, speed="fast")
    pairs = await open_streams(server.port, [payload] * STREAMS, record=True)
    deadline = time.monotonic() + 30
    while not all(c.stream.started_at for c, _ in pairs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert all(c.stream.started_at for c, _ in pairs), "not every idle stream started"
    await asyncio.sleep(0.5)
    rss_open = server.rss_kib()
    for connection, done in pairs:
        done.add_done_callback(lambda f: f.exception())  # closing makes them fail on purpose
        connection.transport.close()
    deadline = time.monotonic() + 10
    while server.open_fds() > fds_before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return rss_before, rss_open, server.open_fds() - fds_before


# --- the run ------------------------------------------------------------------------------------


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def verdict(ok):
    return "PASS" if ok else "MISS"


async def main():
    OUT.mkdir(exist_ok=True)
    raise_fd_limit()
    text = words(STREAM_TOKENS)
    replies = OUT / "bench-replies.toml"
    replies.write_text(
        f"[[replies]]\ncontains = 'bench-long'\ntext = {json.dumps(words(LONG_TOKENS))}\n\n"
        f"[[replies]]\ncontains = 'bench-300'\ntext = {json.dumps(text)}\n"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load_average()}\n")

    rates, sample_events, costs = await bench_unpaced(replies)

    server = Server("memory", {"kind": "system", "settings": mock_settings(replies)})
    try:
        rss_before, rss_open, fds_left = await bench_memory(server)
    finally:
        server.stop()

    paced = {}
    for label, interval in PACED_RUNS.items():
        server = Server("paced", {"kind": "system", "settings": mock_settings(replies, interval)})
        try:
            if not paced:
                plot_path, series = await plot_arrivals(server, text)
            paced[label] = await bench_paced(server, text)
        finally:
            server.stop()

    ratio = rates["mock"] / rates["bare"]
    per_stream = (rss_open - rss_before) / STREAMS
    plot_rates = {
        speed: (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
        for speed, points in series.items()
    }
    rows = [
        (
            "(a) unpaced SSE events/s, mockserver / bare",
            f"{rates['mock']:,.0f} / {rates['bare']:,.0f} = {ratio:.2f}",
            ">= 0.70",
            verdict(ratio >= 0.7),
        )
    ]
    for label, figures in paced.items():
        rows += paced_rows(label, figures)
    rows.append(
        (
            f"(c) RSS per open stream ({STREAMS:,} waiting)",
            f"{per_stream:.1f} KiB ({rss_before / 1024:.0f} -> {rss_open / 1024:.0f} MiB)",
            "(report)",
            "INFO",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("target", "measured", "goal", ""), widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    print(
        f"(a) {sample_events:,} events per response ({LONG_TOKENS:,} tokens), "
        f"{UNPACED_CONNECTIONS} connections, best of {UNPACED_ROUNDS} rounds of {UNPACED_SECONDS:g} s each"
    )
    print(
        f"(a) the bare app on mockserver's coalescing transport instead of stock uvicorn: "
        f"{rates['bare_coalescing']:,.0f} events/s (mockserver / that = "
        f"{rates['mock'] / rates['bare_coalescing']:.2f})"
    )
    print(
        f"(a) CPU per event without sockets: bare Starlette {costs['bare']:.2f} us, mockserver "
        f"{costs['mock']:.2f} us, of which stream_reply (events, schedule, pacing, SSE encoding) "
        f"{costs['pipeline']:.2f} us"
    )
    print(
        f"(b) {STREAMS:,} streams x {STREAM_TOKENS} tokens, fast {FAST_OTPS:g} tokens/s, TTFT {TTFT:g} s, "
        f"requests spread over {RAMP_SECONDS:g} s"
    )
    for label, figures in paced.items():
        print(paced_note(label, figures))
    print(f"(c) file descriptors still open after the client closed all {STREAMS:,} streams: {fds_left}")
    print(
        f"(d) {plot_path}: measured {plot_rates['standard']:.2f} (standard) vs "
        f"{plot_rates['fast']:.2f} (fast) tokens/s, ratio {plot_rates['fast'] / plot_rates['standard']:.2f}"
    )


def load_average():
    return Path("/proc/loadavg").read_text().split()[0]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        started = time.monotonic()
        asyncio.run(main())
        print(f"\nfinished in {time.monotonic() - started:.0f} s")
