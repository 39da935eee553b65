from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from mockserver.server import MockServer
from mockserver.settings import Layer, Settings, build_settings

# Replies still walk through the modelled timing, a thousand times faster than life.
FAST_TIMING = {"time_scale": 1000.0}


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"port": 0, "timing": dict(FAST_TIMING)}
    return build_settings([Layer("test defaults", base), Layer("test overrides", overrides)])


@pytest.fixture
def start_server() -> Iterator[Callable[..., MockServer]]:
    """Start a server with settings overrides (and optionally a clock); all stop at teardown."""
    started: list[MockServer] = []

    def start(clock: Any = None, **overrides: Any) -> MockServer:
        server = MockServer(make_settings(**overrides), clock=clock).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(make_settings()) as running:
        yield running


@pytest.fixture
def client(server: MockServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0)
