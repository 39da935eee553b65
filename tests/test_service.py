"""The standalone service: Dockerfile, .dockerignore and docker-compose.yml, checked without Docker.

No Docker engine runs where these tests run, so no image is built. Instead:
1. docker-compose.yml validates against the Compose Specification schema (vendored in tests/data/);
2. the Dockerfile, the compose file, the README agree with each other and with
   the real settings;
3. the container's own command and environment (Dockerfile CMD and ENV, plus the compose service's
   environment) run here as a process with two workers sharing a real redis-server, changing only
   what must differ outside a container (port, Redis URL, key prefix) and a small rate limit.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from mockserver.errors import ConfigError
from mockserver.settings import Settings, load_settings
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix
from tests.support.workers import PinnedConnection as Pinned
from tests.support.workers import every_worker

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
SERVICE_DOC = ROOT / "docs" / "service.md"  # its "Environment variables" table
README = ROOT / "README.md"
SERVICE = "mockserver"
HEALTH_PATH = "/_admin/health"
HELLO = [{"role": "user", "content": "Hello"}]
API_HEADERS = {"anthropic-version": "2023-06-01"}
# One limit for the whole test server; each test uses API keys of its own (each key is an organisation).
REQUESTS_PER_MINUTE = 10
BURST_MODEL = "claude-opus-4-6"  # used by the admission test only, so its per-worker counts are its own
# Variables a service is likely to set: the docs/service.md table must have at least these.
LIKELY_SET = {
    f"MOCKSERVER_{name}"
    for name in (
        "HOST",
        "PORT",
        "STORAGE",
        "WORKERS",
        "KEY_PREFIX",
        "SEED",
        "ADMIN__TOKEN",
        "ADMIN__ENABLED",
        "TIMING__TIME_SCALE",
        "TIMING__PACE_NON_STREAMING",
        "LIMITS__REQUESTS_PER_MINUTE",
        "LIMITS__INPUT_TOKENS_PER_MINUTE",
        "LIMITS__OUTPUT_TOKENS_PER_MINUTE",
        "LIMITS__FAST_INPUT_TOKENS_PER_MINUTE",
        "LIMITS__FAST_OUTPUT_TOKENS_PER_MINUTE",
        "JOURNAL__MAX_ENTRIES",
        "LOG__FORMAT",
    )
}
STARTUP_DEADLINE = 15.0
STOP_DEADLINE = 15.0

redis_server = redis_server_fixture(scope="module")


# -- reading the files --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions() if name == keyword]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in dockerfile_args("ENV"):
        for pair in shlex.split(arguments):
            name, sep, value = pair.partition("=")
            assert sep, f"ENV {arguments!r}: use the NAME=value form"
            env[name] = value
    return env


def dockerfile_cmd() -> list[str]:
    (cmd,) = dockerfile_args("CMD")
    return json.loads(cmd)  # the exec form: no shell, so the server is PID 1 and gets SIGTERM itself


def dockerfile_healthcheck() -> tuple[list[str], list[str]]:
    """The HEALTHCHECK options and its exec-form command."""
    (arguments,) = dockerfile_args("HEALTHCHECK")
    options, sep, command = arguments.partition(" CMD ")
    assert sep, "HEALTHCHECK without CMD"
    return options.split(), json.loads(command)


def dockerfile_exposed_ports() -> list[int]:
    return [int(port.split("/")[0]) for arguments in dockerfile_args("EXPOSE") for port in arguments.split()]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> str:
    """The value as Compose passes it when the variable is unset (no .env): `${X:-default}` -> default."""
    text = _INTERPOLATION.sub(lambda m: m.group("default") or "", str(value))
    assert "$" not in text.replace("$$", ""), f"unsupported interpolation in {value!r}"
    return text.replace("$$", "$")


def compose_environment(service: str = SERVICE) -> dict[str, str]:
    environment = compose()["services"][service].get("environment", {})
    assert isinstance(environment, dict), "write `environment` as a mapping"
    return {name: interpolate(value) for name, value in environment.items()}


def container_environment() -> dict[str, str]:
    """What the compose service's container sees: the image's ENV under the service's environment."""
    return {**dockerfile_env(), **compose_environment()}


def compose_command(service: str = SERVICE) -> list[str]:
    command = compose()["services"][service].get("command")
    return dockerfile_cmd() if command is None else command


def mockserver_variables(env: dict[str, str]) -> set[str]:
    return {name for name in env if name.startswith("MOCKSERVER_")}


def documented_variables() -> set[str]:
    """The first-column variables of the environment table in docs/service.md."""
    return set(re.findall(r"^\| `(MOCKSERVER_[A-Z0-9_]+)` \|", SERVICE_DOC.read_text(), re.MULTILINE))


def is_setting(variable: str) -> bool:
    """Does `MOCKSERVER_A__B` name a leaf of the settings tree (`a.b`)?"""
    model: type[BaseModel] | None = Settings
    for part in variable.removeprefix("MOCKSERVER_").lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model is None


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (its patterns, without `!`)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled here"
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


# -- 1. the Compose Specification ------------------------------------------------------------------


@functools.cache
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    # The schema names its draft as "http://json-schema.org/draft/2019-09/schema#", a spelling
    # jsonschema does not look up; say it directly. No format checker: compose durations ("10s") are
    # not ISO 8601 durations, and Compose does not check formats that way either.
    assert "draft/2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def schema_errors(document: Any) -> list[str]:
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in compose_validator().iter_errors(document)
    )


def test_compose_file_satisfies_the_compose_specification():
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("misspelt healthcheck key", lambda c: c["services"][SERVICE]["healthcheck"].update(tset=["CMD"])),
        ("depends_on without condition", lambda c: c["services"][SERVICE]["depends_on"].update(redis={})),
        ("ports not a list", lambda c: c["services"][SERVICE].update(ports="8080:8080")),
        ("unknown top-level key", lambda c: c.update(service={})),
    ],
)
def test_the_schema_rejects_broken_variants(where, change):
    # The validation above means something only if the vendored schema is strict where it matters.
    broken = copy.deepcopy(compose())
    change(broken)
    assert schema_errors(broken), where


# -- 2. the files agree -----------------------------------------------------------------------------


def test_compose_builds_the_repository_dockerfile():
    build = compose()["services"][SERVICE]["build"]
    context = ROOT / build["context"] if isinstance(build, dict) else ROOT / build
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    assert (context / dockerfile).resolve() == DOCKERFILE
    (base,) = dockerfile_args("FROM")
    assert base == "python:3.11-slim"
    (user,) = dockerfile_args("USER")
    assert user.split(":")[0] not in ("root", "0")


def test_published_port_is_the_exposed_port_and_the_configured_port():
    port = int(container_environment()["MOCKSERVER_PORT"])
    assert dockerfile_exposed_ports() == [port]
    published = [interpolate(p) for p in compose()["services"][SERVICE]["ports"]]
    assert [int(p.rsplit(":", 1)[-1].split("/")[0]) for p in published] == [port]
    assert all(p.startswith("127.0.0.1:") for p in published), "publish on loopback: the token has a default"
    app = compose_environment("app")
    assert app["ANTHROPIC_BASE_URL"] == f"http://{SERVICE}:{port}"
    assert app["ANTHROPIC_API_KEY"]


def test_compose_reads_no_mockserver_variable_that_is_not_a_setting():
    # The shell that runs `docker compose` may also run `mockserver serve`, which refuses an unknown
    # MOCKSERVER_* variable: a compose-only knob (the host port) must be named otherwise.
    read = {m.group("name") for m in _INTERPOLATION.finditer(COMPOSE.read_text())}
    assert "ANTHROPIC_MOCK_PORT" in read
    assert [name for name in sorted(read) if name.startswith("MOCKSERVER_") and not is_setting(name)] == []


def test_healthchecks_probe_the_admin_health_endpoint():
    options, command = dockerfile_healthcheck()
    assert command[:2] == ["python", "-c"] and HEALTH_PATH in command[2]
    assert any(o.startswith("--timeout=") for o in options)
    services = compose()["services"]
    test = services[SERVICE]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:] == command, "compose and the image probe the same way"
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services[SERVICE]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["app"]["depends_on"] == {SERVICE: {"condition": "service_healthy"}}
    assert services["app"]["profiles"] == ["example"]


def test_the_image_runs_the_readme_serve_command():
    first_block = re.search(r"```\w*\n(.*?)```", README.read_text(), re.DOTALL)
    assert first_block is not None
    first_line = first_block.group(1).splitlines()[0]
    assert first_line.startswith("pip install -e . && mockserver serve")
    readme_command = shlex.split(first_line.split("&&", 1)[1].split("#", 1)[0])
    assert dockerfile_cmd() == readme_command == ["mockserver", "serve"]
    assert compose_command() == readme_command


def test_the_container_environment_is_valid_settings():
    env = container_environment()
    settings = load_settings(environ=env)  # an unknown MOCKSERVER_* name would be a ConfigError here
    assert settings.host == "0.0.0.0" and settings.port == 8080
    assert settings.storage == "redis://redis:6379/0" and settings.workers >= 2
    assert settings.admin.enabled and settings.admin.token
    assert all(is_setting(name) for name in mockserver_variables(env))


def test_the_image_alone_refuses_to_listen_without_an_admin_token():
    with pytest.raises(ConfigError, match="MOCKSERVER_ADMIN__TOKEN"):
        load_settings(environ=dockerfile_env())
    load_settings(environ={**dockerfile_env(), "MOCKSERVER_ADMIN__TOKEN": "t"})


def test_the_docs_table_lists_the_variables_in_use_and_only_real_settings():
    documented = documented_variables()
    used = mockserver_variables(container_environment())
    assert used <= documented, f"undocumented: {sorted(used - documented)}"
    assert [name for name in sorted(documented) if not is_setting(name)] == []
    assert documented >= LIKELY_SET, f"missing: {sorted(LIKELY_SET - documented)}"


def test_dockerignore_keeps_what_the_image_copies():
    sources = []
    for arguments in dockerfile_args("COPY"):
        words = [w for w in shlex.split(arguments) if not w.startswith("--")]
        sources += words[:-1]
    assert sources and all((ROOT / s).exists() for s in sources)
    assert not [s for s in sources if dockerignored(s)]
    for left_out in (".git/HEAD", ".venv/bin/python", "tests/test_service.py", "bench/out/x.json"):
        assert dockerignored(left_out), left_out
    assert dockerignored("mockserver/__pycache__/app.cpython-311.pyc")
    assert not dockerignored("mockserver/defaults/models.toml")


# -- 3. the container's command, run here ---------------------------------------------------------


@dataclass
class Service:
    url: str
    token: str
    workers: int
    process: subprocess.Popen[str]
    log: Path

    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            children.append(int(stat.parent.name))
    return children


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"the server printed nothing within {timeout} s")
    return process.stdout.readline()


def wait_healthy(url: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(url + HEALTH_PATH, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url}{HEALTH_PATH} not healthy in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        **container_environment(),
        # What must differ outside a container: a free port, the test's Redis, keys of our own.
        "MOCKSERVER_PORT": "0",
        "MOCKSERVER_STORAGE": redis_server.url,
        "MOCKSERVER_KEY_PREFIX": unique_key_prefix(),
        # What these tests measure: a small limit, no waiting on modelled generation, instant batches.
        "MOCKSERVER_LIMITS__REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE),
        "MOCKSERVER_TIMING__PACE_NON_STREAMING": "false",
        "MOCKSERVER_BATCHES__PROCESSING_SECONDS": "0",
    }
    assert int(env["MOCKSERVER_WORKERS"]) >= 2
    # The console script of this environment, as `pip install .` puts it on the image's PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    log = tmp_path_factory.mktemp("service") / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            dockerfile_cmd(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    service = None
    try:
        first = read_first_line(process, STARTUP_DEADLINE)
        host = re.escape(env["MOCKSERVER_HOST"])
        found = re.fullmatch(rf"mockserver listening on http://{host}:(\d+) \((\d+) workers\)\n", first)
        assert found, f"unexpected first line {first!r}; stderr: {log.read_text()[-2000:]}"
        service = Service(
            url=f"http://127.0.0.1:{found.group(1)}",  # bound to 0.0.0.0 as in a container; used via loopback
            token=env["MOCKSERVER_ADMIN__TOKEN"],
            workers=int(found.group(2)),
            process=process,
            log=log,
        )
        assert service.workers == int(env["MOCKSERVER_WORKERS"])
        wait_healthy(service.url, time.monotonic() + STARTUP_DEADLINE)
        yield service
    finally:
        stop(process, service)


def stop(process: subprocess.Popen[str], service: Service | None) -> None:
    """SIGTERM, as `docker stop` sends: the supervisor passes it on and every worker exits."""
    workers = [pid for pid in children_of(process.pid) if is_running(pid)]
    process.terminate()
    try:
        status = process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
        pytest.fail(f"the server ignored SIGTERM for {STOP_DEADLINE} s and was killed")
    finally:
        if process.stdout:
            process.stdout.close()
    deadline = time.monotonic() + STOP_DEADLINE
    while (alive := [pid for pid in workers if is_running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"workers {alive} outlived their supervisor")
    tail = service.log_tail() if service else ""
    assert status == 0, f"exit status {status} after SIGTERM; stderr:\n{tail}"


def message(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 5, "messages": HELLO, **extra}


def api_headers(key: str) -> dict[str, str]:
    return {**API_HEADERS, "x-api-key": key}


@pytest.fixture
def workers(service: Service) -> Iterator[list[Pinned]]:
    with every_worker(service.url, service.workers) as pinned:
        yield pinned


def test_the_container_runs_one_supervisor_and_its_workers(service: Service):
    processes = children_of(service.process.pid)
    workers = [pid for pid in processes if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == service.workers


def test_healthchecks_and_the_app_example_succeed_against_the_service(service: Service):
    port = service.url.rsplit(":", 1)[1]
    base = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
    _, image_check = dockerfile_healthcheck()
    compose_check = compose()["services"][SERVICE]["healthcheck"]["test"][1:]
    for command in (image_check, compose_check):
        done = subprocess.run(command, env={**base, "MOCKSERVER_PORT": port}, capture_output=True, timeout=15)
        assert done.returncode == 0, done.stderr
    # The app container's command, with ANTHROPIC_BASE_URL pointing here instead of http://mockserver:8080.
    app_env = {**base, **compose_environment("app"), "ANTHROPIC_BASE_URL": service.url}
    done = subprocess.run(compose_command("app"), env=app_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fast ")
    # Beyond loopback the admin API is closed without the token, the health check is not.
    assert httpx.get(service.url + "/_admin/settings", timeout=5).status_code == 401


def test_workers_admit_one_rate_limit_together(service: Service):
    key, started = f"sk-burst-{uuid.uuid4().hex[:8]}", time.monotonic()
    # A new connection each time, so the kernel hands the requests to either worker.
    statuses = [
        httpx.post(
            service.url + "/v1/messages", json=message(BURST_MODEL), headers=api_headers(key), timeout=10
        ).status_code
        for _ in range(30)
    ]
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    assert set(statuses) == {200, 429}
    # One limit up front plus what refilled during the burst; never one limit per worker.
    assert REQUESTS_PER_MINUTE <= admitted <= REQUESTS_PER_MINUTE * (1 + elapsed / 60)
    # And both workers took part: each worker's own /metrics counts what it served itself.
    pattern = rf'^mockserver_requests_total\{{[^}}]*model="{BURST_MODEL}"[^}}]*\}} (\S+)$'
    with every_worker(service.url, service.workers) as pinned:
        served = {p.worker: sum(map(float, re.findall(pattern, p.metrics(), re.MULTILINE))) for p in pinned}
    assert len(served) == service.workers
    assert sum(served.values()) == len(statuses), served  # every request is counted by exactly one worker
    assert all(count > 0 for count in served.values()), f"one worker served everything: {served}"


def test_a_batch_created_through_one_worker_is_served_by_another(service: Service, workers: list[Pinned]):
    first, second = workers[:2]
    headers = api_headers(f"sk-batch-{uuid.uuid4().hex[:8]}")
    requests = [{"custom_id": f"r{i}", "params": message("claude-opus-4-7")} for i in range(3)]
    created = first.http.post("/v1/messages/batches", json={"requests": requests}, headers=headers)
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    first.still_pinned()

    read = second.http.get(f"/v1/messages/batches/{batch_id}", headers=headers)
    assert read.status_code == 200, read.text
    assert read.json()["id"] == batch_id and read.json()["processing_status"] == "ended"
    results = second.http.get(f"/v1/messages/batches/{batch_id}/results", headers=headers)
    assert results.status_code == 200, results.text
    lines = [json.loads(line) for line in results.text.splitlines() if line.strip()]
    assert sorted(line["custom_id"] for line in lines) == ["r0", "r1", "r2"]
    assert {line["result"]["type"] for line in lines} == {"succeeded"}
    listed = second.http.get("/v1/messages/batches", headers=headers)
    assert [b["id"] for b in listed.json()["data"]] == [batch_id]
    second.still_pinned()
    assert first.worker != second.worker
    # And on new connections, whichever worker takes them.
    for _ in range(10):
        again = httpx.get(f"{service.url}/v1/messages/batches/{batch_id}", headers=headers, timeout=10)
        assert again.status_code == 200, again.text


def test_a_settings_patch_sent_to_one_worker_reaches_every_worker(service: Service, workers: list[Pinned]):
    first, others = workers[0], workers[1:]
    wanted = 1000 + uuid.uuid4().int % 9000
    patched = first.http.patch(
        "/_admin/settings", json={"journal": {"max_entries": wanted}}, headers=service.admin_headers()
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["journal"]["max_entries"] == wanted
    for other in others:
        deadline = time.monotonic() + 5  # published through Redis: allow the message a moment
        while (seen := other.http.get("/_admin/settings", headers=service.admin_headers()).json())["journal"][
            "max_entries"
        ] != wanted:
            assert time.monotonic() < deadline, f"worker {other.worker} still has {seen['journal']}"
            time.sleep(0.02)
        other.still_pinned()
        assert other.worker != first.worker
    first.still_pinned()
    for _ in range(10):
        fresh = httpx.get(service.url + "/_admin/settings", headers=service.admin_headers(), timeout=10)
        assert fresh.json()["journal"]["max_entries"] == wanted
