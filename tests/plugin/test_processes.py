"""The plugin across processes: xdist workers, an external server (--mockserver-url), the example suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "examples"


def test_xdist_workers_get_a_server_each(pytester):
    urls = pytester.mkdir("urls")
    pytester.makepyfile(
        test_workers=f"""
        import os
        import pathlib

        import pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.mockserver(limits={{"requests_per_minute": 1}})
        def test_isolated(mockserver, anthropic_client, n):
            assert mockserver.requests() == []
            anthropic_client.messages.create(
                model="claude-opus-4-7", max_tokens=5, messages=[{{"role": "user", "content": "Hi"}}]
            )
            assert [row["status"] for row in mockserver.requests()] == [200]
            worker = os.environ["PYTEST_XDIST_WORKER"]
            pathlib.Path({str(urls)!r}, f"{{worker}}-{{n}}").write_text(mockserver.url)
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "xdist", "-n", "2", "--dist", "load", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["mockserver: *, storage memory://, seed 0, time_scale 100"])
    by_worker = {path.name.split("-")[0]: path.read_text() for path in urls.iterdir()}
    assert sorted(by_worker) == ["gw0", "gw1"]
    assert len(set(by_worker.values())) == 2  # one server per worker


def test_external_server_via_mockserver_url(pytester):
    server = subprocess.Popen(
        [sys.executable, "-m", "mockserver", "serve", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().split()[-1]
        pytester.makepyfile(
            test_external=f"""
            import anthropic
            import pytest

            HELLO = [{{"role": "user", "content": "Hi"}}]

            def ask(client):
                return client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)

            def test_1_talks_to_the_external_server(mockserver, mockserver_session, anthropic_client):
                assert mockserver.url == {url!r} and mockserver.server is None
                assert mockserver_session.server is None
                settings = mockserver.settings
                assert settings["timing"]["time_scale"] == 1000 and settings["seed"] == 4  # the options
                ask(anthropic_client)
                assert len(mockserver.requests()) == 1

            @pytest.mark.mockserver(limits={{"requests_per_minute": 1}})
            def test_2_marker_is_patched_in(mockserver):
                client = mockserver.anthropic_client(max_retries=0)
                ask(client)
                with pytest.raises(anthropic.RateLimitError):
                    ask(client)
                assert [row["status"] for row in mockserver.requests()] == [200, 429]
                assert mockserver.settings["seed"] == 4

            def test_3_reset_between_tests(mockserver, anthropic_client):
                assert mockserver.requests() == []
                assert mockserver.settings["limits"]["requests_per_minute"] == 4000
                ask(anthropic_client)

            @pytest.mark.mockserver(fake_clock=True)
            def test_4_fake_clock_is_refused(mockserver):
                pass

            @pytest.mark.mockserver(timing={{"warp": 1}})
            def test_5_bad_marker_key(mockserver):
                pass

            def test_6_scripted_replies_and_recorded_bodies(mockserver, anthropic_client):
                mockserver.reply("Scripted there.")  # 3 tokens: within max_tokens=5
                assert ask(anthropic_client).content[0].text == "Scripted there."
                assert mockserver.request_bodies()[0]["messages"] == HELLO  # recorded here too
            """
        )
        result = pytester.runpytest(
            "-p", "no:cacheprovider", f"--mockserver-url={url}", "--mockserver-time-scale=1000",
            "--mockserver-seed=4",
        )  # fmt: skip
        result.assert_outcomes(passed=4, errors=2)
        result.stdout.fnmatch_lines(
            [
                f"mockserver: *, external server {url}, time_scale 1000 (--mockserver-time-scale, "
                "applied before each test)",
                f"*test_4_fake_clock_is_refused: fake_clock=True needs a server of its own, which "
                f"--mockserver-url {url} cannot provide*",
                "*setting 'timing.warp' from @pytest.mark.mockserver on *test_5_bad_marker_key: unknown*",
            ]
        )
        # Without the option the server keeps its own time scale, and the header says so.
        result = pytester.runpytest("-p", "no:cacheprovider", f"--mockserver-url={url}", "--co")
        result.stdout.fnmatch_lines(
            [
                f"mockserver: *, external server {url}, its own time_scale (the plugin's default applies "
                "only to servers it starts)"
            ]
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_more_xdist_workers_than_external_servers_is_refused_up_front(pytester):
    pytester.makepyfile(test_x="def test_x(mockserver): pass")
    # Nothing listens at these URLs: the run must stop before any worker tries them.
    urls = "--mockserver-url=http://127.0.0.1:9"
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "-p", "no:cacheprovider", urls)
    assert result.ret == 4  # usage error
    result.stderr.fnmatch_lines(
        [
            "*--mockserver-url (or MOCKSERVER_URL) gives 1 server to 2 xdist workers: each worker resets "
            "its server before every test, so workers sharing one would wipe each other's state. Give "
            "each worker a server of its own (--mockserver-url=URL1,URL2,... with 2 URLs) or run fewer "
            "workers (-n 1)."
        ]
    )
    result = pytester.runpytest_subprocess(
        "-p", "xdist", "--tx", "3*popen", "--dist", "load", "-p", "no:cacheprovider",
        "--mockserver-url=http://127.0.0.1:9,http://127.0.0.1:10",
    )  # fmt: skip
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*gives 2 servers to 3 xdist workers*"])


def test_a_worker_refuses_a_shared_server_its_controller_did_not_count(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")  # as xdist sets it in each worker
    pytester.makepyfile(test_x="def test_x(mockserver): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--mockserver-url=http://127.0.0.1:9")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*gives 1 server to 2 xdist workers*"])


def test_unreachable_external_server_fails_clearly(pytester):
    pytester.makepyfile(test_x="def test_x(mockserver): pass")
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mockserver-url=http://127.0.0.1:9", "--mockserver-startup-timeout=0.2"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*mockserver: no mockserver answered at http://127.0.0.1:9 within 0.2 s*"])
    result.stdout.fnmatch_lines(
        ["*start one there*or leave out*--mockserver-url and the plugin starts its own*"]
    )


def test_the_example_suite_passes(pytester):
    # As `pytest fixtures/examples` from the repository root: the repo's pytest config applies.
    result = pytester.runpytest_subprocess(str(EXAMPLES))
    result.assert_outcomes(passed=9)


def test_a_missing_sdk_is_named_with_the_extra_that_brings_it(pytester):
    # The server does not need the SDK, so the plugin loads and mockserver_env works without it; the
    # fixtures that hand out SDK clients say what to install.
    pytester.makeconftest('import sys\nsys.modules["anthropic"] = None  # as if not installed\n')
    pytester.makepyfile(
        test_no_sdk="""
        import pytest

        def test_fixture(anthropic_client):
            pass

        def test_async_fixture(async_anthropic_client):
            pass

        def test_handle(mockserver):
            mockserver.anthropic_client()

        def test_env_needs_no_sdk(mockserver_env):
            assert mockserver_env.requests() == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=2)
    out = result.stdout.str()
    wanted = "the anthropic SDK is not installed: pip install 'mockserver[pytest]'"
    for fixture in ("test_fixture", "test_async_fixture"):  # one line, no traceback into the plugin
        assert re.search(rf"_ ERROR at setup of {fixture} _+\n{re.escape(wanted)}\n", out), out
    assert f"SDKMissing: {wanted}" in out  # the handle's method, called in the test
