"""Reaching one chosen worker of a multi-worker server, over plain HTTP and through the official SDK.

Workers share their listening socket; which one accepts a new connection is up to the kernel, but a
kept-alive connection stays with the worker that accepted it. `GET /_admin/health` names the worker
that answered (its process id), so a connection's worker is read over the connection itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2

REQUEST_TIMEOUT = 30.0


class PinnedConnection:
    """One kept-alive connection, hence one worker process, for plain HTTP and for SDK clients."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = anthropic.DefaultHttpxClient(
            base_url=url,
            timeout=REQUEST_TIMEOUT,
            limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.worker = self.identify()

    def sdk(self, api_key: str, **options: Any) -> anthropic.Anthropic:
        """An SDK client whose requests travel over this connection (no retries: a retry proves nothing)."""
        return anthropic.Anthropic(
            base_url=self.url, api_key=api_key, http_client=self.http, max_retries=0, **options
        )

    def metrics(self) -> str:
        response = self.http.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text

    def identify(self) -> int:
        response = self.http.get("/_admin/health")
        assert response.status_code == 200, response.text
        return int(response.json()["worker"])

    def still_pinned(self) -> None:
        # A connection closed by the server (idle keep-alive timeout) would be reopened silently,
        # perhaps on another worker: then the results read through it would prove nothing.
        assert self.identify() == self.worker, "the connection moved to another worker"

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def every_worker(url: str, workers: int, attempts: int = 60) -> Iterator[list[PinnedConnection]]:
    """One pinned connection to each of the server's `workers` (new connections until all are found)."""
    found: dict[int, PinnedConnection] = {}
    try:
        for _ in range(attempts):
            pinned = PinnedConnection(url)
            if pinned.worker in found:
                pinned.close()
            else:
                found[pinned.worker] = pinned
            if len(found) == workers:
                break
        else:
            raise AssertionError(f"{attempts} new connections reached only {len(found)} of {workers} workers")
        yield list(found.values())
    finally:
        for pinned in found.values():
            pinned.close()
