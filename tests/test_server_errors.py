"""The exceptions a server swallowed (answering 500) are kept for embedding tests, the newest 100
of them, and `RunningServer.take_errors` hands out each one once."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mockserver.testing import RunningServer, start_server
from tests.conftest import make_settings


@pytest.fixture
def running() -> Iterator[RunningServer]:
    handle = start_server(make_settings())
    yield handle
    handle.stop()


def fail_requests(running: RunningServer, count: int) -> None:
    """`count` requests that hit a bug (a /metrics that raises) and are answered 500."""
    assert running.state is not None
    calls = 0

    def broken() -> bytes:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"bug {calls}")

    running.state.metrics.render = broken
    for _ in range(count):  # a connection each: uvicorn closes one after an unexpected error
        assert httpx.get(f"{running.url}/metrics").status_code == 500


def test_only_the_newest_errors_are_kept_and_each_is_taken_once(running: RunningServer) -> None:
    assert running.state is not None
    fail_requests(running, 105)
    assert len(running.state.server_errors) == 100  # not one per failed request forever
    taken = running.take_errors()
    assert [str(e) for e in taken] == [f"bug {n}" for n in range(6, 106)]  # the newest 100
    assert running.take_errors() == []
    fail_requests(running, 3)
    assert [str(e) for e in running.take_errors()] == ["bug 1", "bug 2", "bug 3"]
    assert running.take_errors() == []
