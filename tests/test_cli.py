"""`mockserver serve` and `mockserver admin` as users run them: real processes, real sockets.

Every process here is waited for with a deadline: a server that should have stopped but did not
(a restart loop, a hang) fails the test instead of hanging the suite, and its process group is killed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anthropic
import pytest

from mockserver import __version__
from mockserver.admin_client import AdminClient
from tests.support.redis_server import RedisServer, free_port, redis_server_fixture, unique_key_prefix

SERVE = [sys.executable, "-m", "mockserver", "serve", "--port", "0", "--log-level", "warning"]
ADMIN = [sys.executable, "-m", "mockserver", "admin"]
# Generous: two cores are shared by several test runs, and a worker process imports a lot.
STARTUP_DEADLINE = 30.0
EXIT_DEADLINE = 30.0
HELLO = [{"role": "user", "content": "Hello"}]

redis_server = redis_server_fixture(scope="module")


@dataclass
class Ended:
    status: int
    stdout: str
    stderr: str


def run_to_the_end(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Ended:
    """Run a command that must end by itself within the deadline."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,  # so a hang can be ended with every worker it started
    )
    try:
        stdout, stderr = process.communicate(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{command[3:]} still running after {EXIT_DEADLINE} s\n"
            f"stdout: {stdout!r}\nstderr: {stderr[-3000:]}"
        )
    return Ended(process.returncode, stdout, stderr)


@dataclass
class Serving:
    process: subprocess.Popen[str]
    url: str
    stderr: IO[str]

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"the server did not stop within {EXIT_DEADLINE} s:\n{self.log()}")

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[Serving]:
    """`mockserver serve --port 0 ARGS`, once it has said where it listens; killed at the end if still up."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [*SERVE, *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            line = first_line(process)
            assert line.startswith("mockserver listening on http://"), f"{line!r}; stderr: {stderr.read()}"
            yield Serving(process, line.split()[3], stderr)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(STARTUP_DEADLINE):
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the server printed nothing within {STARTUP_DEADLINE} s")
    return process.stdout.readline()


def redis_env(redis_server: RedisServer, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "MOCKSERVER_STORAGE": redis_server.url,
        "MOCKSERVER_KEY_PREFIX": unique_key_prefix(),
        "MOCKSERVER_WORKERS": "2",
        **more,
    }


def with_sitecustomize(env: dict[str, str], directory: Path, code: str) -> dict[str, str]:
    """`env` under which every Python process started runs `code` first (worker processes included):
    a way to break a worker that the parent's checks cannot foresee."""
    (directory / "sitecustomize.py").write_text(code)
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(directory), env.get("PYTHONPATH")]))}


IN_A_WORKER = 'import sys\nif "--multiprocessing-fork" in sys.argv:\n'


def no_process_left(pid: int) -> bool:
    """Whether the process group of `pid` (the server and any worker) is gone."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- item: startup failures are found before "listening", and end the command ------------------------


def test_a_config_error_found_while_building_the_app_comes_before_listening(tmp_path):
    config = tmp_path / "m.toml"
    config.write_text('replies = ["missing.toml"]\n')
    ended = run_to_the_end([*SERVE, "--config", str(config)])
    assert ended.status == 2
    assert ended.stdout == ""  # never claimed to listen
    assert f"setting 'replies': {tmp_path / 'missing.toml'} does not exist" in ended.stderr


def test_an_unreachable_store_ends_the_command_before_listening():
    url = f"redis://127.0.0.1:{free_port()}/0"
    ended = run_to_the_end([*SERVE, "--storage", url])
    assert ended.status == 1 and ended.stdout == ""
    assert ended.stderr.startswith("mockserver: error: cannot reach the store: ")
    assert url in ended.stderr and "Traceback" not in ended.stderr


@pytest.mark.redis
def test_settings_that_cannot_reach_the_workers_end_the_command_before_listening(redis_server):
    # JSON has no infinity: the parent would pass the workers `null`, which every worker would refuse;
    # the settings refuse it first, naming it.
    env = redis_env(redis_server, MOCKSERVER_TIMING__TIME_SCALE="Infinity")
    ended = run_to_the_end(SERVE, env=env)
    assert ended.status == 2 and ended.stdout == ""
    named = "setting 'timing.time_scale' from environment variable MOCKSERVER_TIMING__TIME_SCALE"
    assert named in ended.stderr
    assert "finite number" in ended.stderr


@pytest.mark.redis
def test_workers_that_keep_dying_while_starting_stop_the_supervisor(redis_server, tmp_path):
    env = with_sitecustomize(redis_env(redis_server), tmp_path, IN_A_WORKER + "    import os; os._exit(7)\n")
    ended = run_to_the_end(SERVE, env=env)
    assert ended.stdout.startswith("mockserver listening on ")
    assert ended.status == 1
    last = ended.stderr.strip().splitlines()[-1]
    assert last.startswith("mockserver: error: 3 worker processes in a row died before they were ready")
    assert last.endswith("exited with status 7")


@pytest.mark.redis
def test_a_worker_that_cannot_build_the_app_stops_the_supervisor_at_once(redis_server, tmp_path):
    # Something changed between the parent's check and the worker's start: here, its settings.
    broken = json.dumps({"storage": redis_server.url, "replies": [str(tmp_path / "gone.toml")]})
    code = IN_A_WORKER + f"    import os; os.environ['MOCKSERVER_WORKER_SETTINGS'] = {broken!r}\n"
    ended = run_to_the_end(SERVE, env=with_sitecustomize(redis_env(redis_server), tmp_path, code))
    assert ended.status == 1
    assert f"cannot start: setting 'replies': {tmp_path / 'gone.toml'} does not exist" in ended.stderr
    assert "it cannot start (see its error above)" in ended.stderr.strip().splitlines()[-1]
    assert "Traceback" not in ended.stderr


# -- item: a signal stops the server gracefully, with status 0 -------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_a_single_worker_finish_its_stream_and_exit_0(sig):
    with serving() as server:
        client = anthropic.Anthropic(api_key="sk-signal", base_url=server.url, max_retries=0)
        with client.messages.stream(model="claude-opus-4-7", max_tokens=20, messages=HELLO) as stream:
            events = iter(stream)
            assert next(events).type == "message_start"  # the reply is under way (~1.5 s of it to come)
            server.process.send_signal(sig)
            rest = [event.type for event in events]
        assert rest[-1] == "message_stop"
        assert stream.get_final_message().stop_reason == "max_tokens"
        assert server.wait() == 0, server.log()


@pytest.mark.redis
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_supervisor_and_its_workers_with_status_0(redis_server, sig):
    with serving(env=redis_env(redis_server)) as server:
        with AdminClient(server.url) as admin:
            assert admin.health()["status"] == "ok"
        server.process.send_signal(sig)
        assert server.wait() == 0, server.log()
        deadline = time.monotonic() + EXIT_DEADLINE
        while not no_process_left(server.process.pid):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.05)


# -- item: --version, --time-scale, config-relative paths ------------------------------------------


def test_version_is_the_installed_package_version():
    ended = run_to_the_end([sys.executable, "-m", "mockserver", "--version"])
    assert ended.status == 0
    assert ended.stdout == f"mockserver {importlib.metadata.version('mockserver')}\n"
    assert importlib.metadata.version("mockserver") == __version__


def test_time_scale_flag_sets_the_timing_setting():
    with serving("--time-scale", "50") as server, AdminClient(server.url) as admin:
        assert admin.settings()["timing"]["time_scale"] == 50


def test_a_bad_time_scale_names_the_setting_and_the_command_line():
    ended = run_to_the_end([*SERVE, "--time-scale", "0"])
    assert ended.status == 2 and ended.stdout == ""
    assert (
        "setting 'timing.time_scale' from command line: Input should be greater than or equal to 0.001"
        in ended.stderr
    )


def test_paths_in_a_config_file_are_relative_to_the_file(tmp_path):
    conf = tmp_path / "conf"
    (conf / "canned").mkdir(parents=True)
    (conf / "canned" / "hello.toml").write_text('[[replies]]\nequals = "Hello"\ntext = "Hi from the file."\n')
    (conf / "mockserver.toml").write_text('replies = ["canned"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with serving("--config", "../conf/mockserver.toml", cwd=elsewhere) as server:
        client = anthropic.Anthropic(api_key="sk-paths", base_url=server.url, max_retries=0)
        message = client.messages.create(model="claude-opus-4-7", max_tokens=50, messages=HELLO)
        assert message.content[0].text == "Hi from the file."


# -- item: mockserver admin faults | usage ---------------------------------------------------------


def admin_cli(url: str, *args: str) -> Ended:
    return run_to_the_end([*ADMIN, "--url", url, *args])


def test_admin_faults_lists_adds_and_deletes(start_server):
    server = start_server(faults=[{"name": "configured", "kind": "latency", "model": "nope"}])
    fault = {"name": "overloaded", "kind": "http_error", "status": 529, "count": 1}
    added = admin_cli(server.url, "faults", "--add", json.dumps(fault))
    assert added.status == 0, added.stderr
    assert json.loads(added.stdout) == {**json.loads(added.stdout), **fault, "source": "admin"}

    listed = admin_cli(server.url, "faults")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["name"], row["source"]) for row in rows] == [
        ("configured", "settings"),
        ("overloaded", "admin"),
    ]
    client = anthropic.Anthropic(api_key="sk-faults", base_url=server.url, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 529

    deleted = admin_cli(server.url, "faults", "--delete", "overloaded")
    assert deleted.status == 0 and json.loads(deleted.stdout) == {"name": "overloaded", "deleted": True}
    assert [json.loads(line)["name"] for line in admin_cli(server.url, "faults").stdout.splitlines()] == [
        "configured"
    ]


def test_admin_faults_reports_refusals(start_server):
    server = start_server()
    missing = admin_cli(server.url, "faults", "--delete", "nothing")
    assert missing.status == 1 and "404: no fault named 'nothing'" in missing.stderr
    invalid = admin_cli(server.url, "faults", "--add", '{"name": "x", "kind": "sideways"}')
    assert invalid.status == 1 and "400: kind: " in invalid.stderr
    for bad, why in (("{not json", "not JSON"), ("[1]", "expected a JSON object, got list")):
        ended = admin_cli(server.url, "faults", "--add", bad)
        assert ended.status == 2 and why in ended.stderr and ended.stdout == ""
    both = admin_cli(server.url, "faults", "--add", "{}", "--delete", "x")
    assert both.status == 2 and "not allowed with argument" in both.stderr


def test_admin_usage_reports_tokens_and_cost_within_bounds(start_server):
    server = start_server(api_keys=["sk-usage"])
    client = anthropic.Anthropic(api_key="sk-usage", base_url=server.url, max_retries=0)
    client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    everything = admin_cli(server.url, "usage")
    assert everything.status == 0, everything.stderr
    report = json.loads(everything.stdout)
    (row,) = report["data"]
    assert row["model"] == "claude-opus-4-7" and row["requests"] == 1 and row["output_tokens"] > 0
    assert report["total_cost_usd"] == row["cost_usd"] > 0

    later = time.time() + 3600
    assert json.loads(admin_cli(server.url, "usage", "--since", str(later)).stdout)["data"] == []
    until = admin_cli(
        server.url, "usage", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00"
    )
    assert until.status == 0 and json.loads(until.stdout)["data"] == []
    bad = admin_cli(server.url, "usage", "--since", "yesterday")
    assert bad.status == 2 and "'yesterday' is neither epoch seconds nor an ISO 8601 time" in bad.stderr


def test_admin_without_the_servers_token_says_how_to_give_it(start_server):
    server = start_server(admin={"token": "s3cret"})
    env = {k: v for k, v in os.environ.items() if k != "MOCKSERVER_ADMIN__TOKEN"}
    missing = run_to_the_end([*ADMIN, "--url", server.url, "faults"], env=env)
    assert missing.status == 1
    assert (
        "401" in missing.stderr
        and "(none was given: pass --token or set MOCKSERVER_ADMIN__TOKEN)" in missing.stderr
    )
    wrong = run_to_the_end([*ADMIN, "--url", server.url, "--token", "guess", "faults"], env=env)
    assert wrong.status == 1 and "(the one given is not the server's: pass --token" in wrong.stderr
    right = run_to_the_end([*ADMIN, "--url", server.url, "--token", "s3cret", "faults"], env=env)
    assert right.status == 0, right.stderr


def test_admin_help_says_where_url_and_token_come_from():
    ended = run_to_the_end([*ADMIN, "--help"])
    assert ended.status == 0
    help_text = " ".join(ended.stdout.split())
    assert "$MOCKSERVER_URL" in help_text and "$MOCKSERVER_ADMIN__TOKEN" in help_text
    assert "faults" in help_text and "usage" in help_text


def test_main_as_a_library_call_leaves_the_signal_handlers_as_they_were(tmp_path: Path):
    # `main` is also called in-process (tests, wrappers): the SIGTERM handler it installs for serving
    # is put back, and from a thread other than the main one (where none can be set) it still runs.
    from mockserver.cli import main

    missing = str(tmp_path / "missing.toml")
    before = signal.getsignal(signal.SIGTERM)
    assert main(["serve", "--config", missing]) == 2
    assert signal.getsignal(signal.SIGTERM) is before

    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(main(["serve", "--config", missing])))
    thread.start()
    thread.join(10)
    assert results == [2]
