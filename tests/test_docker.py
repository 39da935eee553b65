"""The standalone service for real: the repository's image built by a Docker engine, Compose run.

tests/test_service.py checks the Dockerfile and docker-compose.yml without Docker; this one needs an
engine (`docker info` answers) and Compose (`docker compose` or `docker-compose`), and skips without
them, as on CI. It builds the image through the shipped compose file and brings up Redis and the
server with two workers, as a user's `docker compose up --build` would. An override file changes
only what a test must: the image's tag (one of its own, removed afterwards), a small fast-mode
output limit, and, through the variables the compose file reads, the host port and the admin token.

One test walks the whole deployment (xdist would otherwise give each of its workers a deployment of
its own). Everything is taken down (`down -v`) whatever happens.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anthropic
import httpx2
import pytest
import yaml

from tests.support.redis_server import free_port
from tests.support.workers import PinnedConnection, every_worker

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICE = "mockserver"
WORKERS = 2  # what docker-compose.yml asks for
PORT_VARIABLE = "ANTHROPIC_MOCK_PORT"  # the host port docker-compose.yml publishes
FAST_MODEL = "claude-opus-4-7"
FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]
MAX_TOKENS = 25  # "Hello" gets a longer reply, so every admitted request is charged exactly this
# Small enough for a burst of fast requests to run out: FAST_OUTPUT_LIMIT // MAX_TOKENS requests.
FAST_OUTPUT_LIMIT = 100  # and the app example, max_tokens 64, fits in it
FAST_HEADERS = {
    f"anthropic-fast-{kind}-tokens-{field}"
    for kind in ("input", "output")
    for field in ("limit", "remaining", "reset")
}
BUILD_TIMEOUT = 300.0
UP_TIMEOUT = 120.0
HEALTH_DEADLINE = 90.0  # Redis healthy, then the server's first probe comes one 10 s interval in
STOP_TIMEOUT = 60.0


# -- the engine and Compose ---------------------------------------------------------------------------


def run(command: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


@functools.cache
def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = run(["docker", "info"], timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        # Older CLIs print the reason among the client's details on stdout, newer ones on stderr.
        lines = [line.strip() for line in (info.stdout + "\n" + info.stderr).splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        reason = next((line for line in lines if "cannot connect" in line.lower()), last)
        return f"no Docker engine answers (`docker info`: {reason[:300]})"
    return None


@functools.cache
def compose_cli() -> list[str] | None:
    """Compose v2 (`docker compose`) or v1 (`docker-compose`), whichever answers first."""
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        try:
            if run([*candidate, "version"], timeout=30).returncode == 0:
                return candidate
        except subprocess.TimeoutExpired:
            continue
    return None


def require_docker() -> list[str]:
    problem = engine_problem()
    if problem is not None:
        pytest.skip(problem)
    compose = compose_cli()
    if compose is None:
        pytest.skip("a Docker engine answers, but neither `docker compose` nor `docker-compose` does")
    return compose


@dataclass
class Deployment:
    compose: list[str]
    project: str
    override: Path
    image: str
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        # Compose reads these when it interpolates docker-compose.yml; the containers do not see them.
        return {**os.environ, PORT_VARIABLE: str(self.port), "MOCKSERVER_ADMIN__TOKEN": self.token}

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        files = ["--file", str(COMPOSE_FILE), "--file", str(self.override)]
        command = [*self.compose, "--project-name", self.project, *files, *args]
        return run(command, timeout=timeout, env=self.environment(), cwd=ROOT)

    def check(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"compose {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
        return done

    def container(self, service: str) -> str:
        (container,) = self.check("ps", "--quiet", service, timeout=60).stdout.split()
        return container

    def logs(self, service: str = SERVICE) -> str:
        return self.run("logs", "--no-color", service, timeout=60).stdout

    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def inspect(container: str, template: str) -> str:
    done = run(["docker", "inspect", "--format", template, container], timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_healthy(deployment: Deployment, container: str) -> None:
    """Until Docker itself calls the container healthy: the image's HEALTHCHECK run by the engine."""
    deadline = time.monotonic() + HEALTH_DEADLINE
    while (status := inspect(container, "{{.State.Health.Status}}")) != "healthy":
        assert status in ("starting", ""), f"the server is {status}:\n{deployment.logs()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"not healthy within {HEALTH_DEADLINE} s ({status}):\n{deployment.logs()[-3000:]}"
        )
        time.sleep(0.5)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    compose = require_docker()
    name = f"mockservertest{uuid.uuid4().hex[:10]}"
    override = tmp_path / "docker-compose.test.yml"
    image = f"mockserver-test:{name}"
    override.write_text(
        yaml.safe_dump(
            {
                "services": {
                    SERVICE: {
                        "image": image,
                        "environment": {
                            "MOCKSERVER_LIMITS__FAST_OUTPUT_TOKENS_PER_MINUTE": str(FAST_OUTPUT_LIMIT)
                        },
                    }
                }
            }
        )
    )
    deployment = Deployment(compose, name, override, image, free_port(), f"token-{uuid.uuid4().hex}")
    try:
        yield deployment
    finally:
        # The profile makes `down` see the app example's service too (a `run` cut short leaves one).
        everything = ("--profile", "example", "down", "--volumes", "--remove-orphans")
        down = deployment.run(*everything, timeout=STOP_TIMEOUT)
        run(["docker", "image", "rm", "--force", image], timeout=STOP_TIMEOUT)
        assert down.returncode == 0, f"compose down left project {name} behind:\n{down.stderr[-3000:]}"


# -- what a client sees -------------------------------------------------------------------------------


def fast_request(client: anthropic.Anthropic) -> tuple[anthropic.types.beta.BetaMessage, httpx2.Headers]:
    raw = client.beta.messages.with_raw_response.create(
        model=FAST_MODEL, max_tokens=MAX_TOKENS, speed="fast", betas=[FAST_BETA], messages=HELLO
    )
    return raw.parse(), raw.headers


def fast_served_by(pinned: PinnedConnection) -> float:
    """Fast-mode requests this connection's worker answered with 200, from its own /metrics."""
    wanted = f'mockserver_requests_total{{model="{FAST_MODEL}",speed="fast",status="200"}} '
    lines = [line for line in pinned.metrics().splitlines() if line.startswith(wanted)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def assert_fast_headers(headers: httpx2.Headers, input_limit: int, output_limit: int) -> None:
    assert not FAST_HEADERS - set(headers), sorted(headers)
    assert int(headers["anthropic-fast-input-tokens-limit"]) == input_limit
    assert int(headers["anthropic-fast-output-tokens-limit"]) == output_limit
    for kind, limit in (("input", input_limit), ("output", output_limit)):
        assert 0 <= int(headers[f"anthropic-fast-{kind}-tokens-remaining"]) <= limit
        datetime.fromisoformat(headers[f"anthropic-fast-{kind}-tokens-reset"])  # RFC 3339


def check_fast_requests_on_each_worker(deployment: Deployment) -> int:
    """Each worker answers a fast request through the SDK; returns the fast input limit in force."""
    with every_worker(deployment.url, WORKERS) as pinned:
        request_ids, input_limit = [], None
        for connection in pinned:
            message, headers = fast_request(connection.sdk(f"sk-fast-{uuid.uuid4().hex[:8]}"))
            assert message.usage.speed == "fast"
            assert message.usage.output_tokens == MAX_TOKENS and message.stop_reason == "max_tokens"
            input_limit = input_limit or int(headers["anthropic-fast-input-tokens-limit"])
            assert_fast_headers(headers, input_limit, FAST_OUTPUT_LIMIT)
            request_ids.append(headers["request-id"])
            connection.still_pinned()
        # A fresh deployment: each worker's own count is exactly the one request sent to it.
        assert {c.worker: fast_served_by(c) for c in pinned} == {c.worker: 1.0 for c in pinned}
        # The journal is shared through Redis: either worker lists both requests.
        journal = pinned[0].http.get("/_admin/requests", headers=deployment.admin_headers())
        assert journal.status_code == 200, journal.text
        listed = {row["request_id"]: row["speed"] for row in journal.json()["data"]}
        assert {rid: listed.get(rid) for rid in request_ids} == dict.fromkeys(request_ids, "fast")
    assert input_limit is not None
    return input_limit


def check_workers_share_the_fast_limit(deployment: Deployment) -> None:
    """One organisation's fast requests, alternating between the workers, run out of one limit."""
    key, statuses = f"sk-burst-{uuid.uuid4().hex[:8]}", []
    with every_worker(deployment.url, WORKERS) as pinned:
        clients = [(connection, connection.sdk(key)) for connection in pinned]
        started = time.monotonic()
        for turn in range(2 * FAST_OUTPUT_LIMIT // MAX_TOKENS + 2):
            connection, client = clients[turn % len(clients)]
            try:
                fast_request(client)
                statuses.append((connection.worker, 200))
            except anthropic.RateLimitError as error:
                statuses.append((connection.worker, 429))
                assert int(error.response.headers["retry-after"]) > 0
                assert error.body["error"]["type"] == "rate_limit_error", error.body
                assert error.response.headers["anthropic-fast-output-tokens-limit"] == str(FAST_OUTPUT_LIMIT)
        elapsed = time.monotonic() - started
        for connection in pinned:
            connection.still_pinned()
    admitted = [worker for worker, status in statuses if status == 200]
    # One limit up front plus what refilled meanwhile; one limit per worker would admit twice as many.
    at_once, refilled = FAST_OUTPUT_LIMIT // MAX_TOKENS, FAST_OUTPUT_LIMIT * elapsed / 60 / MAX_TOKENS
    assert at_once <= len(admitted) <= at_once + refilled, statuses
    assert len(set(admitted)) == WORKERS, f"one worker admitted everything: {statuses}"
    refused = {worker for worker, status in statuses if status == 429}
    assert len(refused) == WORKERS, f"only one worker refused: {statuses}"


def check_a_settings_patch_reaches_the_other_worker(deployment: Deployment, input_limit: int) -> None:
    wanted = input_limit + 1 + uuid.uuid4().int % 1000
    with every_worker(deployment.url, WORKERS) as (first, second):
        patched = first.http.patch(
            "/_admin/settings",
            json={"limits": {"fast_input_tokens_per_minute": wanted}},
            headers=deployment.admin_headers(),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["limits"]["fast_input_tokens_per_minute"] == wanted
        # Seen by every worker once the response is back (DESIGN.md, "Shared state across workers").
        _, headers = fast_request(second.sdk(f"sk-patch-{uuid.uuid4().hex[:8]}"))
        assert_fast_headers(headers, wanted, FAST_OUTPUT_LIMIT)
        first.still_pinned()
        second.still_pinned()
        assert first.worker != second.worker
        assert second.http.get("/_admin/settings").status_code == 401, "the admin API without the token"


def check_the_app_example(deployment: Deployment) -> None:
    """The compose file's example client container reaches the server by its service name."""
    done = deployment.check("--profile", "example", "run", "--rm", "-T", "app", timeout=UP_TIMEOUT)
    assert done.stdout.startswith("fast "), done.stdout


def check_stop(deployment: Deployment, container: str) -> None:
    """`compose stop` sends SIGTERM: the supervisor and both workers finish and the exit code is 0."""
    started = time.monotonic()
    deployment.check("stop", timeout=STOP_TIMEOUT)
    stopped_in = time.monotonic() - started
    exit_code = inspect(container, "{{.State.ExitCode}}")
    logs = deployment.logs()
    assert exit_code == "0", f"exit code {exit_code} after {stopped_in:.1f} s:\n{logs[-3000:]}"
    assert logs.count("Finished server process") == WORKERS, logs[-3000:]


@pytest.mark.timeout(BUILD_TIMEOUT + UP_TIMEOUT + HEALTH_DEADLINE + 2 * STOP_TIMEOUT)
def test_compose_serves_fast_mode_from_two_workers_sharing_redis(deployment: Deployment):
    timings = {}
    started = time.monotonic()
    deployment.check("build", SERVICE, timeout=BUILD_TIMEOUT)
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    deployment.check("up", "--detach", timeout=UP_TIMEOUT)
    container = deployment.container(SERVICE)
    wait_healthy(deployment, container)
    timings["up until healthy"] = time.monotonic() - started
    assert f"({WORKERS} workers)" in deployment.logs()

    started = time.monotonic()
    input_limit = check_fast_requests_on_each_worker(deployment)
    check_workers_share_the_fast_limit(deployment)
    check_a_settings_patch_reaches_the_other_worker(deployment, input_limit)
    check_the_app_example(deployment)
    timings["requests"] = time.monotonic() - started

    started = time.monotonic()
    check_stop(deployment, container)
    timings["stop"] = time.monotonic() - started
    print(", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()))
