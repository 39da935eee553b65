"""What tests hold: the `mockserver` fixture's handle, and assertions over request-journal rows.

Rows are the admin API's journal entries (`GET /_admin/requests`) as plain dicts, and the handle
talks to its server over that API only, so a test reads the same against an in-process server and
an external one (`--mockserver-url`). In-process extras (`.server`, `.state`, `.clock`) are there for
what HTTP cannot do: advancing a fake clock, reading the exceptions a server swallowed.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx

from mockserver.admin_client import AdminClient, AdminError
from mockserver.catalog import FAST_MODE_BETA
from mockserver.clock import Clock, FakeClock
from mockserver.clock_driver import ClockDriver
from mockserver.server import MockServer
from mockserver.settings import Settings

if TYPE_CHECKING:
    import anthropic

    from mockserver.runtime import ServerState

Row = dict[str, Any]
TEST_API_KEY = "test"
SDK_MAX_RETRIES = 2  # the SDK's own default, so retry behaviour under test is the production one
SETTLE_SECONDS = 0.5  # how long a journal read waits for requests in flight to end


class ServerErrors(Exception):
    """The server hit unexpected exceptions (and answered 500) while serving a test."""


class SDKMissing(ModuleNotFoundError):
    """A client of the official SDK was asked for, and `anthropic` is not installed."""


SDK_MISSING = "the anthropic SDK is not installed: pip install 'mockserver[pytest]'"


def import_sdk() -> ModuleType:
    """The `anthropic` module, or `SDKMissing` saying how to install it (the server does not need it)."""
    try:
        import anthropic
    except ImportError as exc:
        if exc.name != "anthropic":  # installed, but broken (one of its own imports failed)
            raise
        raise SDKMissing(SDK_MISSING, name="anthropic") from None
    return anthropic


@dataclass
class RunningServer:
    """One server the plugin talks to; `server` is None when it runs elsewhere (`--mockserver-url`)."""

    url: str
    admin: AdminClient
    server: MockServer | None = None
    settings: Settings | None = None  # boot settings, known only in-process
    errors_seen: int = 0

    @property
    def state(self) -> ServerState | None:
        return None if self.server is None else self.server.state

    @property
    def clock(self) -> FakeClock | None:
        clock = None if self.state is None else self.state.clock
        return clock if isinstance(clock, FakeClock) else None

    def now(self) -> float | None:
        """The server's time (journal `started_at` is on it), when it can be read without a request."""
        return None if self.state is None else self.state.clock.now()

    def busy(self) -> int:
        """Requests in flight that are not asleep on a fake clock (0 for an external server)."""
        if self.server is None:
            return 0
        clock = self.clock
        return self.server.requests_in_flight - (0 if clock is None else clock.pending_sleepers)

    def settle(self, limit: float = SETTLE_SECONDS) -> int:
        """Wait up to `limit` seconds for requests in flight to end, so a request whose client just
        gave up (a timeout, a dropped stream) is in the journal; returns how many are still busy."""
        deadline = time.monotonic() + limit
        while (busy := self.busy()) and time.monotonic() < deadline:
            time.sleep(0.005)
        return busy

    def take_errors(self) -> list[BaseException]:
        """Exceptions the server swallowed since the last call (it answered those requests with 500)."""
        if self.state is None:
            return []
        errors, self.errors_seen = self.state.server_errors_after(self.errors_seen)
        return errors

    def stop(self) -> None:
        self.admin.close()
        if self.server is not None:
            self.server.stop()


def start_server(settings: Settings, *, clock: Clock | None = None, timeout: float = 10.0) -> RunningServer:
    server = MockServer(settings, clock=clock).start(timeout)
    return RunningServer(server.url, AdminClient(server.url, token=settings.admin.token), server, settings)


def connect(url: str, *, token: str | None = None, timeout: float = 10.0) -> RunningServer:
    """An external server, once its health check passes (a compose service may still be starting)."""
    admin = AdminClient(url, token=token)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.health()
            return RunningServer(url.rstrip("/"), admin)
        except AdminError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                admin.close()
                raise RuntimeError(f"mockserver at {url} is not usable for tests: {exc}") from None
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                admin.close()
                raise RuntimeError(
                    f"no mockserver answered at {url} within {timeout} s: {exc}; start one there "
                    "(`mockserver serve --port <port>`, or the compose service), or leave out "
                    "--mockserver-url and the plugin starts its own"
                ) from None
        time.sleep(0.1)


class MockServerHandle:
    """The `mockserver` fixture: one server, reset for this test, with this test's settings applied."""

    def __init__(self, running: RunningServer, layer: Mapping[str, Any] | None = None) -> None:
        self.running = running
        self._layer = jsonable(layer or {})
        self._since: float | None = None
        self._clients: list[anthropic.Anthropic] = []
        self.clock_driver: ClockDriver | None = None  # on fake-clock servers the plugin starts

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def admin(self) -> AdminClient:
        """The full admin API (faults, usage, ...) for what the handle does not wrap."""
        return self.running.admin

    @property
    def server(self) -> MockServer | None:
        return self.running.server

    @property
    def state(self) -> ServerState | None:
        return self.running.state

    @property
    def clock(self) -> FakeClock:
        clock = self.running.clock
        if clock is None:
            raise RuntimeError(
                "this server runs on the system clock; mark the test "
                "@pytest.mark.mockserver(fake_clock=True) to get a clock it can advance"
            )
        return clock

    def auto_advance(self, enabled: bool = True) -> None:
        """Let the fake clock jump to the next deadline whenever every request waits on it (streams,
        paced replies, latency faults then run through without the test stepping the clock)."""
        if self.clock_driver is None:
            raise RuntimeError(
                "auto_advance needs a fake clock the plugin drives: mark the test "
                '@pytest.mark.mockserver(fake_clock=True) or fake_clock="auto"'
            )
        self.clock_driver.auto = enabled

    @property
    def settings(self) -> dict[str, Any]:
        """The live settings as the admin API shows them (a dict; storage passwords redacted)."""
        return self.running.admin.settings()

    def configure(self, patch: Mapping[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
        """Change live settings for the rest of this test, e.g. `configure(limits={...})`."""
        return self.running.admin.configure(jsonable({**(patch or {}), **changes}))

    def reset(self) -> None:
        """Back to how this test started: limits refilled, journal empty, this test's settings."""
        self._since = self.running.now()
        self.running.admin.reset()
        if self._layer:
            self.running.admin.configure(self._layer)

    def requests(self, **filters: Any) -> list[Row]:
        """This test's journal rows, oldest first; filters as the admin API (speed="fast", status="4xx").

        A request is journalled when it ends, which for one whose client gave up is a few ms after
        the client saw it fail: in-process, this waits (up to 0.5 s) for requests in flight to end."""
        self.running.settle()
        rows = self.running.admin.requests(**filters)
        if self._since is not None:
            # A request a previous test abandoned can land in the journal after the reset; it started
            # before this test did, which is how it is told apart (in-process, where the clock is known).
            rows = [row for row in rows if row["started_at"] >= self._since]
        return sorted(rows, key=lambda row: row["started_at"])

    def last_request(self, **filters: Any) -> Row:
        rows = self.requests(**filters)
        if not rows:
            busy = self.running.busy()
            still = f" ({busy} request(s) still in flight, journalled when they end)" if busy else ""
            raise AssertionError(f"mockserver received no request matching {filters or 'anything'}{still}")
        return rows[-1]

    def clear_requests(self) -> None:
        self.running.admin.clear_requests()

    def api_key(self) -> str:
        """The key this handle's clients send: the first of the server's `api_keys` when its live
        settings name any (it then refuses every other key, which a test may check), else "test"."""
        keys = self.settings.get("api_keys") or ()
        return str(keys[0]) if keys else TEST_API_KEY

    def anthropic_client(self, **options: Any) -> anthropic.Anthropic:
        """An SDK client for this server (`api_key()`, the SDK's 2 retries); closed at teardown."""
        client = import_sdk().Anthropic(**{**self._client_options(), **options})
        self._clients.append(client)
        return client

    def async_anthropic_client(self, **options: Any) -> anthropic.AsyncAnthropic:
        # Not closed by the handle: its connections belong to the test's event loop, which is gone by
        # teardown; the SDK closes them when the client is collected.
        return import_sdk().AsyncAnthropic(**{**self._client_options(), **options})

    def _client_options(self) -> dict[str, Any]:
        return {"api_key": self.api_key(), "base_url": self.url, "max_retries": SDK_MAX_RETRIES}

    # Scripted replies: what the next matching POST /v1/messages gets, queued after those before.

    def reply(
        self,
        text: str | None = None,
        *,
        tool_use: str | Mapping[str, Any] | None = None,
        stop_reason: str | None = None,
        error: int | None = None,
        message: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        speed: str | None = None,
        contains: str | None = None,
        times: int | None = 1,
    ) -> Row:
        """The next matching request gets this reply or error instead of a generated one.

        `reply("Hello")`; `reply(tool_use={"name": "get_weather", "input": {"city": "Paris"}})` (only
        for requests that offer the tool; a bare name generates the input from its schema);
        `reply(error=529)`, `reply(error=429, retry_after=1)` (sent as a fault's error is: a 429 with
        the caller's rate-limit headers; `headers=` adds or replaces headers). Only requests matching
        `model`, `speed` and `contains` (in the last user message) take it, `times` of them (None:
        every one until cleared). Usage, streaming and pacing are those of any reply.
        """
        entry = scripted_entry(
            text,
            tool_use=tool_use,
            stop_reason=stop_reason,
            error=error,
            message=message,
            error_type=error_type,
            retry_after=retry_after,
            headers=headers,
            model=model,
            speed=speed,
            contains=contains,
            times=times,
        )
        [row] = self.running.admin.add_replies(entry)
        return row

    def reply_sequence(
        self,
        steps: Iterable[str | Mapping[str, Any]],
        *,
        model: str | None = None,
        speed: str | None = None,
        contains: str | None = None,
    ) -> list[Row]:
        """Replies answered in this order, e.g. `reply_sequence([{"error": 429}, "Hello"])`: each step
        a text or `reply`'s keyword arguments; the filters apply to every step."""
        shared = {"model": model, "speed": speed, "contains": contains}
        entries = [
            scripted_entry(step, **shared) if isinstance(step, str) else scripted_entry(**{**shared, **step})
            for step in steps
        ]
        if not entries:
            raise ValueError("reply_sequence needs at least one step")
        return self.running.admin.add_replies(*entries)

    def scripted_replies(self) -> list[Row]:
        """Every reply scripted in this test, in order, with `used` and `remaining` (None: unlimited)."""
        return self.running.admin.replies()

    def clear_replies(self) -> int:
        return self.running.admin.clear_replies()

    def unused_replies(self) -> list[Row]:
        """Scripted replies left over: uses left of a counted one, or an unlimited one never used."""
        return [
            row
            for row in self.scripted_replies()
            if (row["remaining"] or 0) > 0 or (row["remaining"] is None and not row["used"])
        ]

    def assert_replies_used(self) -> None:
        """Fail unless every scripted reply was used (the plugin only warns, after a passing test)."""
        unused = self.unused_replies()
        if unused:
            raise AssertionError(describe_unused_replies(unused))

    def assert_requests(self, count: int | None = None, **fields: Any) -> list[Row]:
        """This test's requests whose journal fields equal `fields` (model=..., speed="fast",
        status=200, stream=True, scripted=True, ...): exactly `count` of them, or at least one."""
        return assert_requests(self.requests(), count, **fields)

    def request_bodies(self, **filters: Any) -> list[Any]:
        """The JSON bodies of this test's POST /v1/messages requests, oldest first (the plugin's
        servers record them; filters as `requests`)."""
        rows = self.requests(path="/v1/messages", **filters)
        if any(row.get("body") is None for row in rows):
            journal = self.settings["journal"]
            if journal.get("zero_data_retention"):
                raise AssertionError(
                    "this server's journal keeps zero data retention (journal.zero_data_retention), "
                    "which hides request bodies; assert on other journal fields, or turn it off for "
                    'this test: mockserver.configure(journal={"zero_data_retention": False})'
                )
            if not journal["record_bodies"]:
                raise AssertionError(
                    "this server does not record request bodies; "
                    'turn it on with mockserver.configure(journal={"record_bodies": True})'
                )
        return [row["body"] for row in rows]

    # Assertions over this test's journal; the module-level functions take rows instead.

    def assert_fast(self, row: Row | None = None, *, beta: str | None = FAST_MODE_BETA) -> Row:
        return assert_fast(self.last_request() if row is None else row, beta=beta)

    def assert_no_speed(self, row: Row | None = None) -> Row:
        return assert_no_speed(self.last_request() if row is None else row)

    def assert_fell_back(self, **filters: Any) -> tuple[Row, Row]:
        return assert_fell_back(self.requests(**filters))

    def assert_retries_respect_retry_after(
        self, *, retry_after: float | None = None, **filters: Any
    ) -> list[Retry]:
        return assert_retries_respect_retry_after(self.requests(**filters), retry_after=retry_after)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


@dataclass(frozen=True)
class Retry:
    rejected: Row  # the 429
    retry: Row  # the next attempt at the same request
    waited: float  # seconds between their starts, on the server's clock
    retry_after: float


def assert_fast(row: Row, *, beta: str | None = FAST_MODE_BETA) -> Row:
    """The request asked for speed "fast" (and sent the fast-mode beta header, unless beta=None)."""
    if row.get("speed") != "fast":
        raise AssertionError(f"expected a speed=fast request, got speed={row.get('speed')!r}: {_brief(row)}")
    if beta is not None and beta not in (row.get("betas") or []):
        raise AssertionError(f"speed=fast request without the {beta} beta header: {_brief(row)}")
    return row


def assert_no_speed(row: Row) -> Row:
    """The request set no `speed` (the standard-speed fallback).

    Uses the journal's `requested_speed` when the server records it; otherwise the served speed,
    where an explicit speed="standard" looks the same as no speed.
    """
    if "requested_speed" in row:
        if row["requested_speed"] is not None:
            raise AssertionError(f"expected no speed, got speed={row['requested_speed']!r}: {_brief(row)}")
    elif row.get("speed") != "standard":
        raise AssertionError(f"expected no speed (standard), got speed={row.get('speed')!r}: {_brief(row)}")
    return row


def assert_fell_back(rows: Iterable[Row]) -> tuple[Row, Row]:
    """A fast request was rate limited (429) and the same caller then got an answer without speed."""
    ordered = sorted(rows, key=lambda row: row["started_at"])
    for i, rejected in enumerate(ordered):
        if rejected.get("speed") != "fast" or rejected.get("status") != 429:
            continue
        for later in ordered[i + 1 :]:
            if _same_caller(rejected, later) and later.get("status") == 200 and _has_no_speed(later):
                return rejected, later
    raise AssertionError(
        "no rate-limited fast request followed by a standard-speed answer; requests were:\n" + _table(ordered)
    )


def retries(rows: Iterable[Row]) -> list[tuple[Row, Row]]:
    """Each 429 paired with the next attempt at the same request (same key, path, model, speed, stream)."""
    ordered = sorted(rows, key=lambda row: row["started_at"])
    pairs = []
    for i, rejected in enumerate(ordered):
        if rejected.get("status") != 429:
            continue
        following = (row for row in ordered[i + 1 :] if _same_request(rejected, row))
        retry = next(following, None)
        if retry is not None:
            pairs.append((rejected, retry))
    return pairs


def assert_retries_respect_retry_after(
    rows: Iterable[Row], *, retry_after: float | None = None, min_retries: int = 1
) -> list[Retry]:
    """Every retry after a 429 started no sooner than that 429's `retry-after` said.

    The wait is read from the journal row's `retry_after` when the server records it; pass
    `retry_after=` (seconds) to check against a known value instead.
    """
    rows = list(rows)
    checked = []
    for rejected, retry in retries(rows):
        wanted = retry_after if retry_after is not None else rejected.get("retry_after")
        if wanted is None:
            raise AssertionError(
                "this server's journal does not record retry-after; pass retry_after= (seconds) "
                f"to check against: {_brief(rejected)}"
            )
        waited = retry["started_at"] - rejected["started_at"]
        if waited < float(wanted):
            raise AssertionError(
                f"retried {waited:.3f} s after a 429 that said retry-after {wanted}:\n"
                + _table([rejected, retry])
            )
        checked.append(Retry(rejected, retry, waited, float(wanted)))
    if len(checked) < min_retries:
        raise AssertionError(
            f"expected at least {min_retries} retry after a 429, found {len(checked)}; requests were:\n"
            + _table(rows)
        )
    return checked


def scripted_entry(
    text: str | None = None,
    *,
    tool_use: str | Mapping[str, Any] | None = None,
    stop_reason: str | None = None,
    error: int | None = None,
    message: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    model: str | None = None,
    speed: str | None = None,
    contains: str | None = None,
    times: int | None = 1,
) -> dict[str, Any]:
    """`MockServerHandle.reply`'s arguments as the entry `POST /_admin/replies` takes."""
    described = {"type": error_type, "message": message, "retry_after": retry_after, "headers": headers}
    if error is None and any(value is not None for value in described.values()):
        raise ValueError(
            "message=, error_type=, retry_after= and headers= describe an error: give error=<status> too"
        )
    entry: dict[str, Any] = {"times": times}
    if error is not None:
        described["status"] = error
        entry["error"] = {key: value for key, value in described.items() if value is not None}
    if tool_use is not None:
        entry["tool_use"] = {"name": tool_use} if isinstance(tool_use, str) else dict(tool_use)
    optional = {
        "text": text,
        "stop_reason": stop_reason,
        "model": model,
        "speed": speed,
        "contains": contains,
    }
    entry.update((key, value) for key, value in optional.items() if value is not None)
    return jsonable(entry)


def assert_requests(rows: Iterable[Row], count: int | None = None, **fields: Any) -> list[Row]:
    """The rows whose fields equal `fields`: exactly `count` of them, or at least one."""
    rows = list(rows)
    unknown = sorted(set(fields) - set(rows[0])) if rows else []
    if unknown:
        raise AssertionError(f"{unknown[0]!r} is not a journal field; rows have {', '.join(rows[0])}")
    found = [row for row in rows if all(row.get(key) == value for key, value in fields.items())]
    if len(found) != count if count is not None else not found:
        wanted = "at least 1" if count is None else str(count)
        described = ", ".join(f"{key}={value!r}" for key, value in fields.items()) or "any fields"
        raise AssertionError(
            f"expected {wanted} request(s) with {described}, found {len(found)}; the requests were:\n"
            + _table(rows)
        )
    return found


def jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as the admin API takes them (tuples to lists, paths to strings)."""
    return json.loads(json.dumps(dict(data), default=str))


def _has_no_speed(row: Row) -> bool:
    try:
        assert_no_speed(row)
    except AssertionError:
        return False
    return True


def _same_caller(a: Row, b: Row) -> bool:
    return all(a.get(key) == b.get(key) for key in ("api_key_id", "path", "model"))


def _same_request(a: Row, b: Row) -> bool:
    return _same_caller(a, b) and a.get("speed") == b.get("speed") and a.get("stream") == b.get("stream")


def _brief(row: Row) -> str:
    keys = (
        "request_id",
        "model",
        "speed",
        "betas",
        "stream",
        "status",
        "retry_count",
        "scripted",
        "started_at",
    )
    return ", ".join(f"{key}={row.get(key)!r}" for key in keys)


def _table(rows: Iterable[Row]) -> str:
    return "\n".join(f"  {_brief(row)}" for row in rows) or "  (none)"


def server_errors_failure(errors: list[BaseException], where: str) -> ServerErrors:
    """One exception to fail a test with: the first server exception as its cause, the rest as notes."""
    failure = ServerErrors(
        f"mockserver at {where} raised {len(errors)} unexpected exception(s) while serving this test "
        "(the client got HTTP 500)"
    )
    failure.__cause__ = errors[0]
    for extra in errors[1:]:
        failure.add_note("".join(traceback.format_exception(extra)))
    return failure


def describe_server_errors(errors: list[BaseException], where: str) -> str:
    """The same, as a note on a test that already failed for its own reason."""
    parts = [f"mockserver at {where} also raised {len(errors)} unexpected exception(s) (HTTP 500):"]
    parts += ["".join(traceback.format_exception(error)) for error in errors]
    return "\n".join(parts)


def describe_unused_replies(rows: Sequence[Row]) -> str:
    """What was scripted and never taken, and the likely reasons, for a warning or a failure."""
    shown = "; ".join(_scripted_summary(row) for row in rows[:3])
    more = f"; and {len(rows) - 3} more" if len(rows) > 3 else ""
    return (
        f"{len(rows)} scripted repl{'y was' if len(rows) == 1 else 'ies were'} not used up: {shown}{more}. "
        "No request matched them (their model/speed/contains filters, or a tool_use for a tool the "
        "request did not offer), fewer requests came than scripted, or one that took a reply was "
        "refused or abandoned by its client before the answer went out (the use is given back); "
        "mockserver.requests() shows what came"
    )


def _scripted_summary(row: Row) -> str:
    if row.get("error") is not None:
        what = f"error {row['error'].get('status')}"
    elif row.get("tool_use") is not None:
        what = f"tool_use {row['tool_use'].get('name')!r}"
    else:
        what = f"text {_clip(str(row.get('text')))!r}"
    filters = [f"{key}={row[key]!r}" for key in ("model", "speed", "contains") if row.get(key) is not None]
    times = "every request" if row.get("times") in (None, 0) else f"{row['times']}x"
    where = f" for {', '.join(filters)}" if filters else ""
    return f"{what}{where} ({times}, used {row.get('used', 0)})"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
