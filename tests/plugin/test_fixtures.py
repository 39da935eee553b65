"""The plugin's fixtures, marker and options, exercised by inner pytest runs (in-process: fast)."""

from __future__ import annotations

import re

pytest_plugins = ["pytester"]

INNER = """
import asyncio
import os

import anthropic
import pytest

HELLO = [{"role": "user", "content": "Hello"}]
FAST_BETA = "fast-mode-2026-02-01"


def ask(client):
    return client.messages.create(model="claude-opus-4-7", max_tokens=10, messages=HELLO)


def fast(client, max_tokens=10):
    return client.beta.messages.create(
        model="claude-opus-4-7", max_tokens=max_tokens, speed="fast", betas=[FAST_BETA], messages=HELLO
    )


def boom(*args, **kwargs):
    raise RuntimeError("kaboom inside the server")


@pytest.mark.mockserver(seed=7, timing={"time_scale": 250}, limits={"requests_per_minute": 2})
def test_1_marker_applies(mockserver):
    settings = mockserver.settings
    assert settings["seed"] == 7 and settings["timing"]["time_scale"] == 250
    assert settings["timing"]["min_event_interval"] == 0.01  # the rest of the table is kept
    client = mockserver.anthropic_client(max_retries=0)
    ask(client)
    ask(client)
    with pytest.raises(anthropic.RateLimitError):
        ask(client)
    assert [row["status"] for row in mockserver.requests()] == [200, 200, 429]
    assert mockserver.last_request()["body"]["messages"] == HELLO  # recorded under pytest by default
    mockserver.configure(seed=8, journal={"record_bodies": False})


@pytest.mark.mockserver(limits={"requests_per_minute": 2})
def test_2_limits_do_not_leak(mockserver):
    client = mockserver.anthropic_client(max_retries=0)
    ask(client)
    ask(client)  # the same key's bucket, emptied by test_1, was refilled by the reset
    assert [row["status"] for row in mockserver.requests()] == [200, 200]


def test_3_settings_and_journal_do_not_leak(mockserver, anthropic_client):
    settings = mockserver.settings
    assert settings["seed"] == 0 and settings["timing"]["time_scale"] == 100
    assert settings["limits"]["requests_per_minute"] == 4000 and settings["journal"]["record_bodies"]
    assert mockserver.requests() == []
    assert ask(anthropic_client).usage.speed == "standard"
    mockserver.assert_no_speed()
    mockserver.reset()
    assert mockserver.requests() == []


@pytest.mark.mockserver(seed=1)
class TestClosestMarkerWins:
    def test_class_marker(self, mockserver):
        assert mockserver.settings["seed"] == 1

    @pytest.mark.mockserver(seed=2)
    def test_method_marker(self, mockserver):
        assert mockserver.settings["seed"] == 2


@pytest.mark.mockserver(timing={"warp": 9})
def test_bad_marker_key(mockserver):
    pass


@pytest.mark.mockserver(limits={"requests_per_minute": -1})
def test_bad_marker_value(mockserver):
    pass


@pytest.mark.mockserver(key_prefix="own:")
def test_startup_setting_gets_a_server_of_its_own(mockserver, mockserver_session):
    assert mockserver.url != mockserver_session.url
    assert mockserver.settings["key_prefix"] == "own:"
    ask(mockserver.anthropic_client())


@pytest.mark.mockserver(fake_clock=True, limits={"fast_output_tokens_per_minute": 300})
def test_fake_clock_expires_retry_after(mockserver):
    client = mockserver.anthropic_client(max_retries=0)
    fast(client, max_tokens=300)
    with pytest.raises(anthropic.RateLimitError) as caught:
        fast(client, max_tokens=300)
    wait = int(caught.value.response.headers["retry-after"])
    mockserver.clock.advance(wait)  # no sleeping: the bucket refills on the server's fake clock
    fast(client, max_tokens=300)
    mockserver.assert_fast()
    checked = mockserver.assert_retries_respect_retry_after(retry_after=wait)
    assert [retry.waited for retry in checked] == [wait]


def test_factory(mockserver_factory):
    seeded = mockserver_factory(seed=5)
    frozen = mockserver_factory(fake_clock=True)
    assert seeded.url != frozen.url and seeded.settings["seed"] == 5
    before = frozen.clock.now()
    frozen.clock.advance(2)
    assert frozen.clock.now() == before + 2
    with pytest.raises(RuntimeError, match="fake_clock=True"):
        seeded.clock


def test_async_client(async_anthropic_client, mockserver):
    async def call():
        return await async_anthropic_client.messages.create(
            model="claude-opus-4-7", max_tokens=10, messages=HELLO
        )

    assert asyncio.run(call()).content
    assert async_anthropic_client.max_retries == 2
    assert len(mockserver.requests()) == 1


def test_env_for_code_that_builds_its_own_client(mockserver_env):
    assert os.environ["ANTHROPIC_BASE_URL"] == mockserver_env.url
    ask(anthropic.Anthropic())
    assert mockserver_env.last_request()["status"] == 200


def test_server_error_fails_the_test(mockserver, monkeypatch):
    import mockserver.routes.messages as routes

    monkeypatch.setattr(routes, "count_input", boom)
    with pytest.raises(anthropic.InternalServerError):
        ask(mockserver.anthropic_client(max_retries=0))
    # The test body is satisfied; the plugin fails it with the server's traceback.


def test_after_a_server_error_all_is_well(anthropic_client):
    ask(anthropic_client)
"""


def section(text: str, title: str) -> str:
    """The part of pytest's report under one `____ title ____` heading."""
    match = re.search(rf"_+ {re.escape(title)} _+\n(.*?)(?=\n_{{3,}} |\n=+ )", text, re.S)
    assert match, f"no section {title!r} in:\n{text}"
    return match.group(1)


def test_fixtures_marker_and_isolation(pytester):
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=11, failed=1, errors=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["mockserver: *, storage memory://, seed 0, time_scale 100"])

    bad_key = section(out, "ERROR at setup of test_bad_marker_key")
    assert (
        "setting 'timing.warp' from @pytest.mark.mockserver on test_inner.py::test_bad_marker_key: "
        "unknown setting" in bad_key
    )
    assert "Traceback" not in bad_key and "pytest_plugin.py" not in bad_key
    bad_value = section(out, "ERROR at setup of test_bad_marker_value")
    assert "setting 'limits.requests_per_minute' from @pytest.mark.mockserver" in bad_value

    failed = section(out, "test_server_error_fails_the_test")
    assert "kaboom inside the server" in failed
    assert re.search(r"ServerErrors: mockserver at http://127\.0\.0\.1:\d+ raised 1 unexpected", failed)


def test_ini_options_and_config_file(pytester):
    pytester.makefile(".toml", settings="port = 8080\nseed = 3\n[timing]\ntime_scale = 500\n")
    pytester.makeini("[pytest]\nmockserver_config = settings.toml\nmockserver_seed = 9\n")
    pytester.makepyfile(
        test_ini="""
        def test_layers(mockserver):
            settings = mockserver.settings
            assert settings["seed"] == 9  # ini option beats the config file
            assert settings["timing"]["time_scale"] == 500  # the config file beats the plugin default
            assert not mockserver.url.endswith(":8080")  # always a free port
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mockserver: *, storage memory://, seed 9, time_scale 500"])


def test_bad_option_is_a_usage_error(pytester):
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--mockserver-seed", "many")
    assert result.ret == 4  # usage error
    result.stderr.fnmatch_lines(
        ["*--mockserver-seed (or ini mockserver_seed): expected a number, got 'many'"]
    )
