"""The pacing schedule as pure data: deadlines, coalescing, pings, jitter and the late-writer rule."""

from __future__ import annotations

import itertools
import statistics

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockserver.catalog import speed_profile
from mockserver.events import (
    CONTENT_BLOCK_DELTA,
    CONTENT_BLOCK_START,
    CONTENT_BLOCK_STOP,
    MESSAGE_DELTA,
    MESSAGE_START,
    MESSAGE_STOP,
    PING,
    merge_deltas,
    reply_events,
)
from mockserver.pacing import Pace, Pacer, jittered, make_pace, schedule
from mockserver.replies import Reply, TextPart, ThinkingPart, ToolUsePart, Usage
from mockserver.settings import ModelEntry, TimingSettings

OPUS = ModelEntry(
    id="m", display_name="M", speeds=("standard", "fast"), ttft_seconds=1.2, output_tokens_per_second=55.0
)
WORDS = tuple(f" w{i}" for i in range(40))


def text_reply(pieces=WORDS, speed="standard"):
    return Reply("m", (TextPart(tuple(pieces)),), "end_turn", None, Usage(10, len(pieces), speed))


def mixed_reply():
    thinking = ThinkingPart(("a", "b", "c"), "sig", visible=True)
    text = TextPart((" x", " y"))
    tool = ToolUsePart("toolu_1", "f", {"k": 1}, ('{"', "k", '":', "1", "}"))
    return Reply("m", (thinking, text, tool), "tool_use", None, Usage(10, 10, "standard"))


def timeline(reply, pace):
    return list(schedule(reply_events(reply, "msg_1"), pace))


def deltas(items):
    return [item for item in items if item.event.name == CONTENT_BLOCK_DELTA]


def delta_text(event):
    delta = event.data["delta"]
    return delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""


def test_each_token_is_due_at_ttft_plus_its_index_over_otps():
    pace = Pace(ttft=1.2, token_seconds=1 / 55)
    items = timeline(text_reply(), pace)
    assert [item.event.name for item in items[:3]] == [MESSAGE_START, CONTENT_BLOCK_START, PING]
    assert all(item.at == 0 for item in items[:3])  # the client sees the stream open at once
    assert [item.at for item in deltas(items)] == pytest.approx([1.2 + k / 55 for k in range(len(WORDS))])
    last = deltas(items)[-1].at
    assert [(item.event.name, item.at) for item in items[-3:]] == [
        (CONTENT_BLOCK_STOP, last),
        (MESSAGE_DELTA, last),
        (MESSAGE_STOP, last),
    ]
    assert pace.duration(len(WORDS)) == last


def test_fast_and_standard_share_ttft_and_differ_in_otps_by_the_multiplier():
    timing = TimingSettings(min_event_interval=0, ping_interval=0)
    runs = {}
    for speed in ("standard", "fast"):
        items = deltas(timeline(text_reply(speed=speed), make_pace(speed_profile(OPUS, speed), timing, 7)))
        runs[speed] = (items[0].at, (len(items) - 1) / (items[-1].at - items[0].at))
    assert runs["standard"][0] == runs["fast"][0] == 1.2
    assert runs["standard"][1] == pytest.approx(55.0)
    assert runs["fast"][1] == pytest.approx(55.0 * OPUS.fast_multiplier)


def test_time_scale_divides_every_duration():
    timing = TimingSettings(time_scale=10, min_event_interval=0.05, ping_interval=2.0)
    pace = make_pace(speed_profile(OPUS, "standard"), timing, 0)
    assert pace == Pace(ttft=0.12, token_seconds=1 / 550, min_event_interval=0.005, ping_interval=0.2)


def test_tokens_due_within_the_minimum_interval_go_out_as_one_delta():
    pace = Pace(ttft=1.0, token_seconds=0.01, min_event_interval=0.035)
    items = deltas(timeline(text_reply(), pace))
    assert items[0].at == 1.0 and items[0].event.tokens == 1  # coalescing never delays the first token
    assert all(3 <= item.event.tokens <= 4 for item in items[1:-1])  # what fell due in 35 ms
    assert all(b.at - a.at >= 0.035 - 1e-9 for a, b in itertools.pairwise(items[:-1]))
    assert items[-1].at == pytest.approx(1.0 + 39 * 0.01)  # the block's tail is not held back
    assert "".join(delta_text(item.event) for item in items) == "".join(WORDS)
    assert sum(item.event.tokens for item in items) == len(WORDS)
    for item in items:  # a delta goes out only once its last token is due
        assert item.at >= 1.0 + (sum(i.event.tokens for i in items if i.at <= item.at) - 1) * 0.01 - 1e-9


def test_tokens_of_different_blocks_never_share_a_delta():
    pace = Pace(ttft=0.5, token_seconds=0.01, min_event_interval=10.0)
    items = timeline(mixed_reply(), pace)
    by_index = {}
    for item in deltas(items):
        by_index.setdefault(item.event.data["index"], []).append(item.event)
    assert "".join(delta_text(e) for e in by_index[0]) == "abc"
    assert by_index[0][-1].data["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert "".join(delta_text(e) for e in by_index[1]) == " x y"
    assert "".join(delta_text(e) for e in by_index[2]) == '{"k":1}'
    assert [item.at for item in items] == sorted(item.at for item in items)


def test_pings_keep_a_long_wait_for_the_first_token_alive():
    pace = Pace(ttft=3.0, token_seconds=0.75, ping_interval=1.0)
    items = timeline(text_reply(WORDS[:5]), pace)
    names = [(item.event.name, item.at) for item in items]
    assert names[:6] == [
        (MESSAGE_START, 0),
        (CONTENT_BLOCK_START, 0),
        (PING, 0),
        (PING, 1.0),
        (PING, 2.0),
        (CONTENT_BLOCK_DELTA, 3.0),
    ]
    pings = [at for name, at in names if name == PING]
    assert pings == [0, 1.0, 2.0, 4.0, 5.0]  # none with the token at 3.0, none at or after the end
    assert names[-1] == (MESSAGE_STOP, 6.0)


def test_the_schedule_is_lazy():
    pace = Pace(ttft=1.0, token_seconds=0.01, ping_interval=0.001)
    consumed = []

    def events():
        for event in reply_events(text_reply(), "msg_1"):
            consumed.append(event)
            yield event

    items = schedule(events(), pace)
    next(items)
    assert len(consumed) == 1


def test_a_late_writer_gets_everything_due_as_one_delta_per_block():
    pace = Pace(ttft=1.0, token_seconds=0.01, ping_interval=0.5)
    pacer = Pacer(schedule(reply_events(mixed_reply(), "msg_1"), pace), start=100.0)
    first = pacer.take(pacer.next_deadline)
    assert [e.name for e in first] == [MESSAGE_START, CONTENT_BLOCK_START, PING]
    assert pacer.next_deadline == 100.5  # a keepalive ping while waiting for the first token
    late = pacer.take(now=200.0)
    assert pacer.done
    names = [e.name for e in late]
    assert PING not in names  # the data itself keeps the connection alive
    assert [e.data["delta"]["type"] for e in late if e.name == CONTENT_BLOCK_DELTA] == [
        "thinking_delta",
        "signature_delta",
        "text_delta",
        "input_json_delta",
    ]
    assert sum(e.tokens for e in late) == 10
    assert names[-2:] == [MESSAGE_DELTA, MESSAGE_STOP]


def test_deadlines_stay_absolute_when_the_writer_is_late():
    pace = Pace(ttft=1.0, token_seconds=0.1)
    pacer = Pacer(schedule(reply_events(text_reply(), "msg_1"), pace), start=50.0)
    pacer.take(50.0)  # message_start, block start, ping
    late = pacer.take(51.25)  # woke 0.25 s after the first token was due: tokens 0, 1, 2 are due
    assert [e.tokens for e in late] == [3]
    assert pacer.next_deadline == pytest.approx(51.3)  # token 3, on the original grid: no drift
    on_time = pacer.take(pacer.next_deadline)
    assert [e.tokens for e in on_time] == [1]


def test_keepalives_collapse_to_one_ping_and_give_way_to_data():
    pace = Pace(ttft=10.0, token_seconds=0.01, ping_interval=1.0)
    pacer = Pacer(schedule(reply_events(text_reply(), "msg_1"), pace), start=0.0)
    assert [e.name for e in pacer.take(0.0)] == [MESSAGE_START, CONTENT_BLOCK_START, PING]
    assert [e.name for e in pacer.take(5.5)] == [PING]  # five keepalives were due: one is sent
    assert pacer.next_deadline == 6.0
    assert [e.name for e in pacer.take(10.0)] == [CONTENT_BLOCK_DELTA]  # data, no keepalives


def test_merge_deltas_equals_folding_merged():
    run = [e for e in reply_events(text_reply(), "msg_1") if e.name == CONTENT_BLOCK_DELTA]
    folded = run[0]
    for event in run[1:]:
        folded = folded.merged(event)
    assert merge_deltas(run) == folded


@pytest.mark.parametrize("distribution", ["uniform", "normal", "lognormal"])
def test_ttft_jitter_is_seeded_and_spread_as_named(distribution):
    draws = [jittered(1.0, distribution, 0.2, seed) for seed in range(2000)]
    assert draws == [jittered(1.0, distribution, 0.2, seed) for seed in range(2000)]
    assert len(set(draws)) > 1900
    assert min(draws) >= 0
    assert statistics.fmean(draws) == pytest.approx(1.0, abs=0.02)
    if distribution == "uniform":
        assert min(draws) >= 0.8 and max(draws) <= 1.2
    else:
        assert statistics.stdev(draws) == pytest.approx(0.2, rel=0.15)
    if distribution == "lognormal":
        assert statistics.median(draws) < 1.0  # skewed right


def test_no_jitter_is_exact():
    assert jittered(1.2, "none", 0.5, 3) == 1.2
    assert jittered(1.2, "normal", 0.0, 3) == 1.2


# --- property: any pace, any wake-up pattern, the stream still spells the reply exactly -----------

piece = st.text(alphabet='ab {}":,1é', min_size=1, max_size=4)


@st.composite
def replies(draw):
    parts = []
    if draw(st.booleans()):
        pieces = tuple(draw(st.lists(piece, min_size=1, max_size=12)))
        parts.append(ThinkingPart(pieces, "sig", visible=draw(st.booleans())))
    parts.append(TextPart(tuple(draw(st.lists(piece, min_size=1, max_size=20)))))
    if draw(st.booleans()):
        parts.append(ToolUsePart("toolu_1", "f", {"k": 1}, ('{"', "k", '":', "1", "}")))
    tokens = sum(len(part.pieces) for part in parts)
    return Reply("m", tuple(parts), "end_turn", None, Usage(1, tokens, "standard"))


def accumulate(events):
    blocks = []
    output_tokens = None
    for event in events:
        data = event.data
        if event.name == CONTENT_BLOCK_START:
            assert data["index"] == len(blocks)
            blocks.append({"type": data["content_block"]["type"], "text": "", "signature": ""})
        elif event.name == CONTENT_BLOCK_DELTA:
            delta = data["delta"]
            if delta["type"] == "signature_delta":
                blocks[data["index"]]["signature"] = delta["signature"]
            else:
                blocks[data["index"]]["text"] += delta.get(
                    "text", delta.get("thinking", delta.get("partial_json"))
                )
        elif event.name == MESSAGE_DELTA:
            output_tokens = data["usage"]["output_tokens"]
    return blocks, output_tokens


@settings(max_examples=150, deadline=None)
@given(
    reply=replies(),
    token_seconds=st.floats(0.001, 0.2),
    interval=st.sampled_from([0.0, 0.005, 0.05, 1.0]),
    ping=st.sampled_from([0.0, 0.01, 0.3]),
    lateness=st.lists(st.floats(0.0, 0.5), max_size=400),
)
def test_any_pace_and_any_lateness_deliver_the_reply_exactly(reply, token_seconds, interval, ping, lateness):
    pace = Pace(ttft=0.5, token_seconds=token_seconds, min_event_interval=interval, ping_interval=ping)
    pacer = Pacer(schedule(reply_events(reply, "msg_1"), pace), start=10.0)
    sent = []
    late = iter(lateness)
    last = 0.0
    while not pacer.done:
        now = max(pacer.next_deadline, last) + next(late, 0.0)  # the writer wakes up this late
        batch = pacer.take(now)
        assert sum(1 for e in batch if e.name == PING) <= 1
        sent.extend(batch)
        last = now
    blocks, output_tokens = accumulate(sent)
    assert output_tokens == reply.usage.output_tokens == sum(e.tokens for e in sent)
    for block, part in zip(blocks, reply.parts, strict=True):
        assert block["type"] == part.type
        if isinstance(part, ThinkingPart):
            assert block["text"] == part.thinking and block["signature"] == part.signature
        else:
            assert block["text"] == "".join(part.pieces)


# Through a real server: timing settings at their extremes must never take the event loop.

STREAM = {
    "model": "claude-opus-4-7",
    "max_tokens": 30,
    "stream": True,
    "messages": [{"role": "user", "content": "Hello"}],
}
CALLER = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}


def test_pings_far_closer_than_the_server_can_send_them_cost_one_per_wake_up(start_server):
    # 1e-9 s pings over a 1 ms wait were counted off one by one: the server stopped answering.
    server = start_server(timing={"time_scale": 1000.0, "ping_interval": 1e-9})
    with httpx.Client(base_url=server.url, headers=CALLER, timeout=5) as http:
        response = http.post("/v1/messages", json=STREAM)
        assert response.status_code == 200
        assert response.text.rstrip().endswith('data: {"type":"message_stop"}')
        assert http.get("/_admin/health").status_code == 200
    assert server.state.server_errors == []


def test_a_wait_without_end_leaves_the_server_serving(start_server):
    # A time scale so small that every wait and every ping interval was infinite (5e-324) looped for
    # ever between two pings due at the same infinity; it is refused now (test_settings), and the
    # slowest scale allowed makes a wait of the longest kind left: about a TTFT a thousand times over.
    server = start_server(timing={"time_scale": 0.001})
    with httpx.Client(base_url=server.url, headers=CALLER, timeout=5) as http:
        with http.stream("POST", "/v1/messages", json=STREAM) as stream:
            assert stream.status_code == 200
            first = next(stream.iter_lines())
            assert first == "event: message_start"
            assert http.get("/_admin/health").status_code == 200  # while the stream waits
    assert server.state.server_errors == []
