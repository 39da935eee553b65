"""The control plane over real HTTP: health, settings, reset, journal, auth, metrics, the admin CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mockserver.admin_client import AdminClient, AdminError

FAST = {"anthropic-beta": "fast-mode-2026-02-01"}
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def running(start_server):
    server = start_server()
    admin = AdminClient(server.url)
    client = anthropic.Anthropic(api_key="sk-secret-key-1", base_url=server.url, max_retries=0)
    yield server, admin, client
    admin.close()


def test_health(running):
    _server, admin, _ = running
    # `worker` names the process that answered: an in-process server is this test's process.
    assert admin.health() == {"status": "ok", "storage": "memory://", "worker": os.getpid()}


def test_settings_get_and_patch_are_live(running):
    _server, admin, _client = running
    assert admin.settings()["timing"]["time_scale"] == 1000
    updated = admin.configure(timing={"time_scale": 500}, seed=9)
    assert updated["timing"]["time_scale"] == 500 and updated["seed"] == 9
    assert updated["timing"]["min_event_interval"] == 0.01  # the rest of the table is kept
    assert admin.settings()["seed"] == 9


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"timing": {"time_scale": -1}}, "timing.time_scale"),
        ({"timing": {"warp": 1}}, "'timing.warp' from admin API: unknown setting"),
        ({"port": 1}, "port: can only be set at startup"),
        ({"storage": "redis://x"}, "storage: can only be set at startup"),
    ],
)
def test_bad_patch_changes_nothing_and_says_why(running, patch, words):
    _, admin, _ = running
    before = admin.settings()
    with pytest.raises(AdminError) as caught:
        admin.configure(patch)
    assert caught.value.status == 400 and words in caught.value.message
    assert admin.settings() == before


HUGE_PRICE = {"input_per_mtok": 1e308, "output_per_mtok": 1e308}


@pytest.mark.parametrize(
    ("patch", "name"),
    [
        # Each was accepted: a price overflowed a reply's cost to inf (null in the usage report, a
        # 500 from it on Redis), and the timing ones left every reply waiting for ever.
        ({"pricing": {"models": {"opus": HUGE_PRICE}}}, "pricing.models.opus.input_per_mtok"),
        ({"pricing": {"fast_multiplier": 1e308}}, "pricing.fast_multiplier"),
        ({"timing": {"ttft_jitter": "normal", "ttft_jitter_width": 1e300}}, "timing.ttft_jitter_width"),
        ({"timing": {"ttft_jitter": "uniform", "ttft_jitter_width": 1e300}}, "timing.ttft_jitter_width"),
        ({"timing": {"time_scale": 1e-300}}, "timing.time_scale"),
        ({"timing": {"ping_interval": 1e300}}, "timing.ping_interval"),
        ({"models": [{"id": "m", "display_name": "M", "ttft_seconds": 1e308}]}, "models.0.ttft_seconds"),
        (
            {"models": [{"id": "m", "display_name": "M", "output_tokens_per_second": 1e-300}]},
            "models.0.output_tokens_per_second",
        ),
        ({"batches": {"processing_seconds": 1e308}}, "batches.processing_seconds"),
    ],
)
def test_an_absurd_setting_is_a_400_naming_it(running, patch, name):
    _, admin, client = running
    before = admin.settings()
    with pytest.raises(AdminError) as caught:
        admin.configure(patch)
    assert caught.value.status == 400
    assert f"setting '{name}' from admin API: Input should be" in caught.value.message
    assert admin.settings() == before
    # ... and the server still answers in its modelled time.
    assert client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO).content


def test_the_dearest_price_allowed_costs_a_finite_amount(running):
    _, admin, client = running
    admin.configure(pricing={"models": {"opus": {"input_per_mtok": 1e6, "output_per_mtok": 1e6}}})
    reply = client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    expected = (reply.usage.input_tokens + reply.usage.output_tokens) * 1e6 / 1e6
    (row,) = admin.requests(status=200)
    assert row["cost_usd"] == pytest.approx(expected)
    report = admin.usage()
    assert report["total_cost_usd"] == pytest.approx(expected) and report["unknown_cost_requests"] == 0


def test_patch_must_be_a_json_object(running):
    server, _, _ = running
    response = httpx.patch(f"{server.url}/_admin/settings", content=b"[1]")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_journal_records_requests_without_the_key(running):
    _server, admin, client = running
    client.beta.messages.create(
        model="claude-opus-4-7", max_tokens=20, speed="fast", betas=["fast-mode-2026-02-01"], messages=HELLO
    )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=20, speed="fast", messages=HELLO, extra_headers=FAST
        )
    rows = admin.requests()
    assert [row["status"] for row in rows] == [200, 400]
    ok, bad = rows
    assert (
        ok["model"] == "claude-opus-4-7" and ok["speed"] == "fast" and ok["betas"] == ["fast-mode-2026-02-01"]
    )
    assert ok["usage"]["output_tokens"] == 20 and ok["max_tokens"] == 20 and ok["retry_count"] == 0
    assert ok["duration_seconds"] >= 0 and ok["ttft_seconds"] is not None
    assert ok["api_key_id"].startswith("key_") and ok["request_id"].startswith("req_")
    assert bad["error_type"] == "invalid_request_error" and "claude-sonnet-4-6" in bad["error_message"]
    everything = json.dumps(admin.journal())
    assert "sk-secret-key-1" not in everything
    assert ok["body"] is None  # bodies are only kept when asked


def test_journal_filters(running):
    _, admin, client = running
    client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    client.messages.create(
        model="claude-opus-4-6", max_tokens=5, speed="fast", messages=HELLO, extra_headers=FAST
    )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=HELLO)
    assert [r["model"] for r in admin.requests(speed="fast")] == ["claude-opus-4-6"]
    assert [r["model"] for r in admin.requests(model="claude-opus-4-7")] == ["claude-opus-4-7"]
    assert [r["status"] for r in admin.requests(status="4xx")] == [404]
    assert len(admin.requests(status=200)) == 2
    with pytest.raises(AdminError, match="unknown filter"):
        admin.requests(colour="red")


def test_journal_is_bounded_and_counts_drops(start_server):
    server = start_server(journal={"max_entries": 3})
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    for n in range(5):
        client.messages.create(model="claude-opus-4-7", max_tokens=n + 1, messages=HELLO)
    with AdminClient(server.url) as admin:
        journal = admin.journal()
        assert [row["max_tokens"] for row in journal["data"]] == [3, 4, 5]
        assert journal["dropped"] == 2
        assert admin.clear_requests() == 3 and admin.requests() == []


def test_bodies_recorded_on_request_and_never_under_zero_data_retention(start_server):
    for zdr, expected in ((False, True), (True, False)):
        server = start_server(journal={"record_bodies": True, "zero_data_retention": zdr})
        client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
        client.messages.create(
            model="claude-opus-4-7", max_tokens=5, messages=[{"role": "user", "content": "secret plan"}]
        )
        with AdminClient(server.url) as admin:
            assert ("secret plan" in json.dumps(admin.journal())) is expected


def test_reset_restores_boot_state(running):
    _, admin, client = running
    admin.configure(seed=42)
    client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    admin.reset()
    assert admin.settings()["seed"] == 0
    assert admin.requests() == []


def test_admin_token_and_disabled_admin(start_server):
    server = start_server(admin={"token": "s3cret"})
    assert httpx.get(f"{server.url}/_admin/requests").status_code == 401
    assert httpx.get(f"{server.url}/_admin/requests", headers={"x-api-key": "s3cret"}).status_code == 401
    with AdminClient(server.url, token="s3cret") as admin:
        assert admin.requests() == []
        assert admin.settings()["admin"]["token"] == "***"
    assert httpx.get(f"{server.url}/_admin/health").status_code == 200  # healthchecks carry no token
    off = start_server(admin={"enabled": False})
    assert httpx.get(f"{off.url}/_admin/settings").status_code == 404
    assert httpx.get(f"{off.url}/_admin/health").status_code == 200  # still there for healthchecks
    assert httpx.post(f"{off.url}/_admin/reset").json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("token", ["\x00", "line\nbreak", " edge", "é", "😀"])
def test_an_admin_token_no_header_can_carry_is_refused(start_server, token):
    # Accepted, it locked the admin API until a restart: no client could send it.
    server = start_server()
    response = httpx.patch(f"{server.url}/_admin/settings", json={"admin": {"token": token}})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("invalid settings: setting 'admin.token' from admin API: a token is printable")
    assert httpx.get(f"{server.url}/_admin/settings").json()["admin"]["token"] is None
    with AdminClient(server.url, token="with inner spaces ~!") as admin:  # what a header can carry
        admin.configure(admin={"token": "with inner spaces ~!"})
        assert admin.settings()["admin"]["token"] == "***"


def test_non_loopback_binding_needs_an_admin_token():
    from mockserver.errors import ConfigError
    from mockserver.settings import load_settings

    with pytest.raises(ConfigError, match=r"admin\.token"):
        load_settings(environ={}, overrides={"host": "0.0.0.0"})
    assert load_settings(environ={}, overrides={"host": "0.0.0.0", "admin": {"token": "t"}}).host == "0.0.0.0"


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_counters_move(running):
    server, _, client = running
    before = _samples(server.url)
    client.messages.create(
        model="claude-opus-4-6", max_tokens=7, speed="fast", messages=HELLO, extra_headers=FAST
    )
    with client.messages.stream(model="claude-opus-4-7", max_tokens=9, messages=HELLO) as stream:
        stream.get_final_message()
    after = _samples(server.url)
    fast_ok = (
        "mockserver_requests_total",
        (("model", "claude-opus-4-6"), ("speed", "fast"), ("status", "200")),
    )
    assert after[fast_ok] - before.get(fast_ok, 0) == 1
    assert after[("mockserver_output_tokens_total", (("speed", "fast"),))] >= 7
    assert after[("mockserver_output_tokens_total", (("speed", "standard"),))] >= 9
    assert after[("mockserver_time_to_first_token_seconds_count", (("speed", "standard"),))] >= 1
    assert after[("mockserver_open_streams", ())] == 0


def test_admin_cli_against_a_running_server(running):
    server, admin, client = running
    client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mockserver", "admin", "--url", server.url, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    lines = cli("requests", "--filter", "model=claude-opus-4-7").stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == 200
    assert json.loads(cli("settings", "--set", "timing.time_scale=250").stdout)["timing"]["time_scale"] == 250
    bad = cli("settings", "--set", "timing.time_scale=-3")
    assert bad.returncode == 1 and "timing.time_scale" in bad.stderr
    assert json.loads(cli("reset").stdout) == {"status": "reset"}
    assert admin.requests() == []


def test_bad_journal_filters_are_a_400(running):
    _, admin, _ = running
    for filters in ({"status": "abc"}, {"stream": "maybe"}):
        with pytest.raises(AdminError) as caught:
            admin.requests(**filters)
        assert caught.value.status == 400


def test_a_client_that_hangs_up_mid_body_is_journalled_not_an_error(running):
    server, admin, _ = running
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: sk-gone\r\nanthropic-version: 2023-06-01\r\n"
        "content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"model": "claude-opus-4-7", ')  # then hang up, 970 bytes short
    deadline = time.monotonic() + 5
    while not (rows := admin.requests(status=499)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [row["path"] for row in rows] == ["/v1/messages"]
    assert server.state.server_errors == []  # not a 500, no traceback


def test_a_blank_admin_token_leaves_the_admin_api_open_on_loopback(start_server):
    server = start_server(admin={"token": "  "})
    response = httpx.get(f"{server.url}/_admin/settings")
    assert response.status_code == 200 and response.json()["admin"]["token"] is None


def test_a_numeric_admin_token_from_the_environment():
    from mockserver.server import MockServer
    from mockserver.settings import load_settings

    settings = load_settings(environ={"MOCKSERVER_ADMIN__TOKEN": "123456"}, overrides={"port": 0})
    with MockServer(settings) as server:
        assert httpx.get(f"{server.url}/_admin/requests").status_code == 401
        with AdminClient(server.url, token="123456") as admin:
            assert admin.requests() == []


def test_unknown_models_share_one_metrics_label(running):
    server, _, client = running
    names = [f"claude-made-up-{i}" for i in range(5)]
    for name in names:
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(model=name, max_tokens=7, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError):  # an alias refused after its model was known
        client.messages.create(model="claude-opus-4-7", max_tokens=7, speed="fast", messages=HELLO)
    text = httpx.get(f"{server.url}/metrics").text
    assert not any(name in text for name in names)
    samples = _samples(server.url)
    other = ("mockserver_requests_total", (("model", "other"), ("speed", "standard"), ("status", "404")))
    assert samples[other] == 5
    refused = (
        "mockserver_requests_total",
        (("model", "claude-opus-4-7"), ("speed", "fast"), ("status", "400")),
    )
    assert samples[refused] == 1
