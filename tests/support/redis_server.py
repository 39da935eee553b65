"""A real `redis-server` on a free loopback port, for tests that need Redis.

`RedisServer` can be stopped and started again on the same port, which is how outage tests break
and heal the connection under a client that keeps its URL. Without the binary, tests skip; on CI
(env `CI` set) they fail instead, so a broken CI image cannot silently skip the Redis suite.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

START_DEADLINE = 10.0


def redis_server_binary() -> str:
    """Path of `redis-server`, or skip the test (fail when running on CI)."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server binary not found on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI is set: the Redis tests must run on CI", pytrace=False)
        pytest.skip(message)
    return path


def unique_key_prefix() -> str:
    """A fresh key prefix, so tests sharing one Redis never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}:"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="mockserver-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        log = self._dir / "redis.log"
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", str(self._dir), "--logfile", str(log)]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_DEADLINE
        while not self._answers_ping():
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self._process.returncode}: "
                    f"{stderr.strip() or _tail(log)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within {START_DEADLINE} s: "
                    f"{_tail(log)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, like a hung host."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def running_redis_server() -> Iterator[RedisServer]:
    with RedisServer(redis_server_binary()) as server:
        yield server


def redis_server_fixture(scope: Any = "session") -> Callable[..., Any]:
    """A pytest fixture yielding a started `RedisServer`; assign it to a name in a conftest:
    `redis_server = redis_server_fixture()`."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[RedisServer]:
        with running_redis_server() as server:
            yield server

    return fixture


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
