"""The pytest plugin (entry point `pytest11: mockserver`): fixtures that give each test a reset server.

Loaded into every pytest run of every project that installs mockserver, so at import time it needs
only pytest and the standard library; the server, pydantic and the SDK are imported by the fixtures
and hooks that use them, and no server starts until a test asks for one.

Settings layers, lowest first: defaults < plugin defaults (a free port, `timing.time_scale` 100) <
`--mockserver-config` file < `MOCKSERVER_*` environment < `--mockserver-*` options / ini < the
test's `@pytest.mark.mockserver(...)` marker < `mockserver.configure(...)` inside the test.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import anthropic

    from mockserver.clock_driver import ClockDriver
    from mockserver.settings import Layer, Settings
    from mockserver.testing import MockServerHandle, RunningServer

MARKER = "mockserver"
# Settings a running server cannot change (they pick its socket, its store, or lock the plugin out
# of its admin API): a marker naming one gets a server of its own.
DEDICATED_KEYS = frozenset({"host", "port", "storage", "key_prefix", "admin"})
# Request bodies are recorded so that tests can read what was sent (`mockserver.request_bodies()`).
PLUGIN_DEFAULTS: dict[str, Any] = {"timing": {"time_scale": 100.0}, "journal": {"record_bodies": True}}
# What an external server gets before each test besides the options: what request assertions read.
EXTERNAL_PATCH: dict[str, Any] = {"journal": {"record_bodies": True}}
SESSION_FIXTURES = frozenset({"mockserver_session"})

_WORKER_COUNT = "PYTEST_XDIST_WORKER_COUNT"  # set by xdist in each worker
_T = TypeVar("_T")
_PLUGIN = pytest.StashKey["_Plugin"]()
_SERVERS = pytest.StashKey[list["RunningServer"]]()
_CLOCK_DRIVERS = pytest.StashKey[list["ClockDriver"]]()
_HANDLES = pytest.StashKey[list["MockServerHandle"]]()


class UnusedRepliesWarning(pytest.PytestWarning):
    """A passing test left scripted replies no request used: its filters (model, speed, contains,
    a tool the request did not offer) matched nothing, so its requests got generated replies.
    `-W error::mockserver.pytest_plugin.UnusedRepliesWarning` makes it fail the test."""


AUTO = "auto"  # fake_clock="auto": the clock moves to the next deadline whenever every request waits
_STALL_DEFAULT = object()  # fake_clock_stall not given: the ClockDriver's default

OPTIONS = {
    # name: (help, metavar)
    "url": (
        "use the mockserver already running at URL instead of starting one (e.g. a docker-compose "
        "service); a comma-separated list spreads xdist workers over several servers "
        "[env MOCKSERVER_URL]",
        "URL",
    ),
    "config": ("TOML settings file for the servers the plugin starts", "FILE"),
    "storage": ("limiter/journal store of the servers the plugin starts: memory:// or redis://...", "URI"),
    "seed": ("seed for reply content", "N"),
    "time-scale": ("divide every modelled latency by this (plugin default 100)", "X"),
    "admin-token": ("admin API token of the --mockserver-url server [env MOCKSERVER_ADMIN__TOKEN]", "TOKEN"),
    "startup-timeout": ("seconds to wait for a server to start or answer (default 10)", "SECONDS"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockserver", "mockserver: a local Anthropic Messages API")
    for name, (help_text, metavar) in OPTIONS.items():
        dest = "mockserver_" + name.replace("-", "_")
        group.addoption(f"--mockserver-{name}", dest=dest, metavar=metavar, default=None, help=help_text)
        parser.addini(dest, help_text.split(" [env")[0], default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): settings for this test's mockserver, e.g. limits={{...}}, seed=3 "
        "(the closest marker wins); fake_clock=True gives the test a server of its own on a FakeClock "
        '(advanced by the test), fake_clock="auto" one that moves to the next deadline by itself; '
        "fake_clock_stall=<seconds or None> how long requests may wait on a clock the test does not "
        "advance before the test fails (default 2)",
    )
    options = _read_options(config)
    shared = _shared_servers_problem(options.urls, _xdist_workers(config))
    if shared is not None:
        raise pytest.UsageError(shared)
    config.stash[_PLUGIN] = _Plugin(options)


def _xdist_workers(config: pytest.Config) -> int:
    """How many xdist workers this run starts, as its controller knows before any starts (0: none)."""
    if hasattr(config, "workerinput") or getattr(config.option, "dist", "no") == "no":
        return 0
    count = 0
    for spec in getattr(config.option, "tx", None) or ():  # `-n 2` is ["popen", "popen"]; "3*popen"
        times, star, _ = str(spec).partition("*")
        count += int(times) if star and times.isdigit() else 1
    return count


def _shared_servers_problem(urls: tuple[str, ...], workers: int) -> str | None:
    """Each worker resets its server before every test: two workers on one server would wipe each
    other's journal, limits and settings mid-test, and fail in ways that point nowhere near the cause."""
    if not urls or workers <= len(urls):
        return None
    given = "1 server" if len(urls) == 1 else f"{len(urls)} servers"
    return (
        f"--mockserver-url (or MOCKSERVER_URL) gives {given} to {workers} xdist workers: each worker "
        "resets its server before every test, so workers sharing one would wipe each other's state. "
        f"Give each worker a server of its own (--mockserver-url=URL1,URL2,... with {workers} URLs) "
        f"or run fewer workers (-n {len(urls)})."
    )


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[_PLUGIN].header()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Servers swallow unexpected exceptions (the client sees a 500, as from the real API); the test
    # that caused them fails with their traceback instead of passing or failing mysteriously.
    __tracebackhide__ = True
    try:
        result = yield
    except Exception as exc:
        for running, errors in _server_errors(item):
            from mockserver.testing import describe_server_errors

            exc.add_note(describe_server_errors(errors, running.url))
        for stall in _clock_stalls(item):
            exc.add_note(stall)
        raise
    found = _server_errors(item)
    if found:
        from mockserver.testing import server_errors_failure

        running, errors = found[0]
        raise server_errors_failure([e for _, errs in found for e in errs], running.url)
    stalls = _clock_stalls(item)
    if stalls:
        from mockserver.clock_driver import FakeClockStalled

        raise FakeClockStalled("\n".join(stalls))
    _warn_unused_replies(item)
    return result


def _warn_unused_replies(item: pytest.Item) -> None:
    import warnings

    from mockserver.testing import describe_unused_replies

    for handle in item.stash.get(_HANDLES, []):
        try:
            unused = handle.unused_replies()
        except Exception:  # a server the test stopped or broke on purpose has nothing to say
            continue
        if unused:
            # Shown at the test, not at this line of the plugin.
            line = (item.location[1] or 0) + 1
            warning = UnusedRepliesWarning(describe_unused_replies(unused))
            warnings.warn_explicit(warning, UnusedRepliesWarning, str(item.path), line)


def _clock_stalls(item: pytest.Item) -> list[str]:
    return [stall for driver in item.stash.get(_CLOCK_DRIVERS, []) for stall in driver.take_stalls()]


def _server_errors(item: pytest.Item) -> list[tuple[RunningServer, list[BaseException]]]:
    servers = list(item.stash.get(_SERVERS, []))
    session = item.config.stash[_PLUGIN].session_server
    if session is not None and SESSION_FIXTURES & set(item.fixturenames) and session not in servers:
        servers.append(session)
    found = [(running, running.take_errors()) for running in servers]
    return [(running, errors) for running, errors in found if errors]


def _track(node: pytest.Item, running: RunningServer) -> None:
    running.take_errors()  # what happened before this test is not this test's fault
    node.stash.setdefault(_SERVERS, []).append(running)


@dataclass(frozen=True)
class _Options:
    urls: tuple[str, ...]
    config_file: Path | None
    storage: str | None
    seed: int | None
    time_scale: float | None
    admin_token: str | None
    startup_timeout: float


def _read_options(config: pytest.Config) -> _Options:
    def value(name: str) -> tuple[str | None, bool]:
        """The option's value and whether it came from the ini file (paths there are ini-relative)."""
        given = config.getoption(name)
        if given not in (None, ""):
            return str(given), False
        ini = config.getini(name)
        return (str(ini), True) if ini else (None, False)

    def number(name: str, kind: Callable[[str], Any]) -> Any:
        raw = value(name)[0]
        try:
            return None if raw is None else kind(raw)
        except ValueError:
            flag = "--" + name.replace("_", "-")
            raise pytest.UsageError(f"{flag} (or ini {name}): expected a number, got {raw!r}") from None

    url = value("mockserver_url")[0] or os.environ.get("MOCKSERVER_URL") or ""
    config_file, from_ini = value("mockserver_config")
    path = None
    if config_file is not None:
        path = Path(config_file)
        if from_ini and not path.is_absolute() and config.inipath is not None:
            path = config.inipath.parent / path
    return _Options(
        urls=tuple(part.strip().rstrip("/") for part in url.split(",") if part.strip()),
        config_file=path,
        storage=value("mockserver_storage")[0],
        seed=number("mockserver_seed", int),
        time_scale=number("mockserver_time_scale", float),
        admin_token=value("mockserver_admin_token")[0] or os.environ.get("MOCKSERVER_ADMIN__TOKEN"),
        startup_timeout=number("mockserver_startup_timeout", float) or 10.0,
    )


@dataclass
class _Plugin:
    options: _Options
    session_server: RunningServer | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def external_url(self) -> str | None:
        if not self.options.urls:
            return None
        # xdist workers are gw0, gw1, ...: each takes its own server from the list when there are several.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        index = int(worker[2:]) if worker[2:].isdigit() else 0
        return self.options.urls[index % len(self.options.urls)]

    def boot_layers(self) -> list[Layer]:
        from mockserver.settings import Layer, env_layer, read_toml

        options = self.options
        layers = [Layer("defaults", {}), Layer("pytest plugin defaults", PLUGIN_DEFAULTS)]
        if options.config_file is not None:
            layers.append(Layer(f"config file {options.config_file}", read_toml(options.config_file)))
        layers.append(env_layer(os.environ))
        # Always a free port: a config file written for `mockserver serve` names a fixed one.
        layers.append(Layer("pytest plugin (free port)", {"port": 0}))
        if self.option_patch() or options.storage:
            storage = {"storage": options.storage} if options.storage else {}
            layers.append(Layer("--mockserver-* options", {**self.option_patch(), **storage}))
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            # A shared store (Redis) would otherwise let one worker's per-test reset wipe another's state.
            prefix = build_prefix(layers)
            layers.append(Layer(f"xdist worker {worker}", {"key_prefix": f"{prefix}{worker}:"}))
        return layers

    def option_patch(self) -> dict[str, Any]:
        """What the options change at runtime: also sent to an external server before each test."""
        patch: dict[str, Any] = {}
        if self.options.seed is not None:
            patch["seed"] = self.options.seed
        if self.options.time_scale is not None:
            patch["timing"] = {"time_scale": self.options.time_scale}
        return patch

    def boot_settings(self) -> Settings:
        if self._settings is None:
            from mockserver.settings import build_settings

            self._settings = build_settings(self.boot_layers())
        return self._settings

    def header(self) -> str:
        version = _version()
        url = self.external_url
        if url is not None:
            servers = ", ".join(self.options.urls)
            scale = self.options.time_scale
            if scale is None:  # the server's own, which only a request (after a reset) could tell
                timing = "its own time_scale (the plugin's default applies only to servers it starts)"
            else:
                timing = f"time_scale {scale:g} (--mockserver-time-scale, applied before each test)"
            return f"mockserver: {version}, external server {servers}, {timing}"
        from mockserver.errors import ConfigError
        from mockserver.limits.store import redact

        try:
            settings = self.boot_settings()
        except ConfigError as exc:
            return f"mockserver: {version}, settings error: {exc}"
        return (
            f"mockserver: {version}, storage {redact(settings.storage)}, seed {settings.seed}, "
            f"time_scale {settings.timing.time_scale:g}"
        )


def build_prefix(layers: list[Layer]) -> str:
    from mockserver.settings import build_settings

    return build_settings(layers).key_prefix


def _version() -> str:
    try:
        return importlib.metadata.version("mockserver")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _or_fail(make: Callable[[], _T]) -> _T:
    """`make()`, with a settings mistake reported as the test's failure, not as a crash in the plugin."""
    from mockserver.errors import ConfigError

    return _failing_as_one_line(make, ConfigError)


def _with_sdk(make: Callable[[], _T]) -> _T:
    """`make()`, with a missing SDK reported as one line saying what to install."""
    from mockserver.testing import SDKMissing

    return _failing_as_one_line(make, SDKMissing)


def _failing_as_one_line(make: Callable[[], _T], expected: type[Exception]) -> _T:
    try:
        return make()
    except expected as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the `except`: no "during handling" chain


class ServerFactory:
    """The `mockserver_factory` fixture: `factory(fake_clock=False, fake_clock_stall=2, **settings)`
    starts one more server."""

    def __init__(self, plugin: _Plugin, node: pytest.Item) -> None:
        self._plugin = plugin
        self._node = node
        self._started: list[tuple[MockServerHandle, RunningServer]] = []

    def __call__(
        self, *, fake_clock: bool | str = False, fake_clock_stall: Any = _STALL_DEFAULT, **settings: Any
    ) -> MockServerHandle:
        origin = "mockserver_factory(...)"
        mode = _fake_clock_mode(fake_clock, origin)
        stall = _stall_seconds(fake_clock_stall, mode, origin)
        return self.start(settings, fake_clock=mode, stall=stall, origin=origin)

    def start(
        self, settings: Mapping[str, Any], *, fake_clock: bool | str, stall: Any, origin: str
    ) -> MockServerHandle:
        """`stall`: the fake clock's stall time in seconds, None (never) or _STALL_DEFAULT."""
        from mockserver.clock import FakeClock
        from mockserver.clock_driver import ClockDriver
        from mockserver.settings import Layer, build_settings
        from mockserver.testing import MockServerHandle, start_server

        layers = self._plugin.boot_layers()
        if fake_clock:
            # A frozen clock never ends the modelled wait of a JSON reply; tests advance it for limits.
            layers.append(Layer("fake clock", {"timing": {"pace_non_streaming": False}}))
        layers.append(Layer(origin, settings))
        built = build_settings(layers)
        running = start_server(
            built, clock=FakeClock() if fake_clock else None, timeout=self._plugin.options.startup_timeout
        )
        handle = MockServerHandle(running)
        self._started.append((handle, running))
        clock, server = running.clock, running.server
        if clock is not None and server is not None:
            # Moves the clock (auto), or fails the test fast when requests wait on it in vain.
            options = {} if stall is _STALL_DEFAULT else {"stall_after": stall}
            handle.clock_driver = ClockDriver(clock, server, auto=fake_clock == AUTO, **options).start()
            self._node.stash.setdefault(_CLOCK_DRIVERS, []).append(handle.clock_driver)
        handle.reset()  # only to mark where this test's journal starts
        _track(self._node, running)
        return handle

    def stop_all(self) -> None:
        for handle, running in reversed(self._started):
            handle.close()
            driver = handle.clock_driver
            if driver is not None:
                # A stream still asleep on the clock (its client is not the plugin's) would hold the
                # server's shutdown for its 5 s of grace: the clock runs it to its end instead.
                driver.release()
            running.stop()
            if driver is not None:
                driver.stop()
        self._started.clear()


@pytest.fixture(scope="session")
def mockserver_session(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """The server shared by this session (one per xdist worker), or the `--mockserver-url` one."""
    from mockserver.errors import ConfigError
    from mockserver.testing import connect, start_server

    plugin = request.config.stash[_PLUGIN]
    timeout = plugin.options.startup_timeout
    url = plugin.external_url
    running: RunningServer | None = None
    # Refused at configure time already, unless this worker's controller could not count its workers.
    problem = _shared_servers_problem(plugin.options.urls, int(os.environ.get(_WORKER_COUNT) or 0))
    if problem is None:
        try:
            if url is not None:
                running = connect(url, token=plugin.options.admin_token, timeout=timeout)
            else:
                running = start_server(plugin.boot_settings(), timeout=timeout)
        except (ConfigError, RuntimeError, TimeoutError, OSError) as exc:
            problem = f"mockserver: {exc}"
    if running is None:
        pytest.fail(str(problem), pytrace=False)  # outside the `except`: no "during handling" chain
    plugin.session_server = running
    yield running
    plugin.session_server = None
    running.stop()


@pytest.fixture
def mockserver_factory(request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Extra in-process servers: `mockserver_factory(fake_clock=False, **settings)`; stopped at teardown."""
    factory = ServerFactory(request.config.stash[_PLUGIN], request.node)
    yield factory
    factory.stop_all()


@pytest.fixture
def mockserver(request: pytest.FixtureRequest) -> Iterator[MockServerHandle]:
    """This test's server: reset, with the closest `@pytest.mark.mockserver(...)` settings applied."""
    plugin = request.config.stash[_PLUGIN]
    origin = f"@pytest.mark.{MARKER} on {request.node.nodeid}"
    settings, fake_clock, stall = _marker_settings(request.node, origin)
    dedicated = sorted(DEDICATED_KEYS & set(settings))
    if fake_clock or dedicated:
        url = plugin.external_url
        if url is not None:
            startup_only = f"'{dedicated[0]}' (settable only at startup)" if dedicated else ""
            why = f"fake_clock={fake_clock!r}" if fake_clock else startup_only
            pytest.fail(
                f"{origin}: {why} needs a server of its own, which --mockserver-url {url} cannot "
                "provide; deselect this test when running against an external server",
                pytrace=False,
            )
        factory: ServerFactory = request.getfixturevalue("mockserver_factory")
        own = _or_fail(lambda: factory.start(settings, fake_clock=fake_clock, stall=stall, origin=origin))
        request.node.stash.setdefault(_HANDLES, []).append(own)
        yield own
        return
    running: RunningServer = request.getfixturevalue("mockserver_session")
    handle = _or_fail(lambda: _session_handle(plugin, running, settings, origin))
    _track(request.node, running)
    request.node.stash.setdefault(_HANDLES, []).append(handle)
    yield handle
    handle.close()


def _session_handle(
    plugin: _Plugin, running: RunningServer, settings: Mapping[str, Any], origin: str
) -> MockServerHandle:
    from mockserver.admin_client import AdminError
    from mockserver.errors import ConfigError
    from mockserver.settings import Layer, build_settings
    from mockserver.testing import MockServerHandle

    # In-process the options are part of the boot settings; an external server gets them per test.
    patch = {} if running.server is not None else _merged(EXTERNAL_PATCH, plugin.option_patch())
    base = {} if running.settings is None else running.settings.model_dump()
    # Checked here first so a bad key is reported as coming from the marker, not from "admin API".
    build_settings(
        [Layer("server settings", base), Layer("--mockserver-* options", patch), Layer(origin, settings)]
    )
    handle = MockServerHandle(running, _merged(patch, settings))
    try:
        handle.reset()
    except AdminError as exc:
        message = f"{origin}: mockserver at {running.url} refused the settings: {exc.message}"
        raise ConfigError(message) from None
    return handle


def _marker_settings(node: pytest.Item, origin: str) -> tuple[dict[str, Any], bool | str, Any]:
    """The marker's settings, its fake_clock mode and its fake_clock_stall."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return {}, False, _STALL_DEFAULT
    if marker.args:
        pytest.fail(f"{origin}: takes settings as keyword arguments, e.g. seed=3", pytrace=False)
    settings = dict(marker.kwargs)
    mode = _fake_clock_mode(settings.pop("fake_clock", False), origin)
    return settings, mode, _stall_seconds(settings.pop("fake_clock_stall", _STALL_DEFAULT), mode, origin)


def _fake_clock_mode(value: Any, origin: str) -> bool | str:
    if not isinstance(value, bool) and value != AUTO:
        pytest.fail(f'{origin}: fake_clock must be True, False or "auto", got {value!r}', pytrace=False)
    return value


def _stall_seconds(value: Any, fake_clock: bool | str, origin: str) -> Any:
    if value is _STALL_DEFAULT:
        return value
    if not fake_clock:
        pytest.fail(f'{origin}: fake_clock_stall needs fake_clock=True or "auto"', pytrace=False)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is not None and not (number and 0 < value < float("inf")):
        pytest.fail(
            f"{origin}: fake_clock_stall must be a number of seconds above 0, or None (never), got {value!r}",
            pytrace=False,
        )
    return value


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def anthropic_client(mockserver: MockServerHandle) -> anthropic.Anthropic:
    """`anthropic.Anthropic` for this test's server: `mockserver.api_key()` ("test" unless the server
    sets `api_keys`), max_retries 2 (the SDK default)."""
    return _with_sdk(mockserver.anthropic_client)


@pytest.fixture
def async_anthropic_client(mockserver: MockServerHandle) -> anthropic.AsyncAnthropic:
    """`anthropic.AsyncAnthropic` for this test's server, configured like `anthropic_client`."""
    return _with_sdk(mockserver.async_anthropic_client)


@pytest.fixture
def mockserver_env(mockserver: MockServerHandle, monkeypatch: pytest.MonkeyPatch) -> MockServerHandle:
    """Point code that builds its own client at this test's server through ANTHROPIC_* variables."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mockserver.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", mockserver.api_key())
    # The SDK would also send a bearer token from the environment; the test's key is the one wanted.
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return mockserver
