"""`MockServer`: a real uvicorn server on a pre-bound loopback socket, in a thread of its own.

Binding the socket before uvicorn starts is what makes `port=0` safe: the port is known (and
owned) before anyone is told the URL, so parallel test workers never race for it.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from mockserver.app import create_app
from mockserver.clock import Clock
from mockserver.http_protocol import CoalescingHTTPProtocol
from mockserver.settings import Settings


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it every response (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app: Any, **overrides: Any) -> uvicorn.Config:
    # A bounded graceful shutdown: a reply held by a long latency fault must not keep SIGTERM waiting.
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
        "http": CoalescingHTTPProtocol,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class MockServer:
    """Start with `start()` (or `with MockServer(...) as server:`), talk to `server.url`, `stop()`."""

    def __init__(self, settings: Settings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or Settings(port=0)
        self.app = create_app(self.settings, clock=clock)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def state(self) -> Any:
        return self.app.state.mock

    def start(self, timeout: float = 10.0) -> MockServer:
        self._socket = bind_socket(self.settings.host, self.settings.port)
        self.url = url_of(self._socket)
        self._server = uvicorn.Server(uvicorn_config(self.app))
        self._thread = threading.Thread(target=self._run, name=f"mockserver {self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"mockserver at {self.url} stopped during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mockserver at {self.url} did not start within {timeout} s")
            time.sleep(0.005)
        return self

    @property
    def requests_in_flight(self) -> int:
        """HTTP requests being served now (uvicorn's tasks); read from any thread, for test tooling
        that must know whether every request is waiting on a fake clock."""
        return 0 if self._server is None else len(self._server.server_state.tasks)

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        self._server.run(sockets=[self._socket])  # uvloop when installed, as `mockserver serve`

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
