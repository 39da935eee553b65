"""Reaching one chosen worker of a multi-worker server, over plain HTTP and through the official SDK.

Workers share their listening socket; which one accepts a new connection is up to the kernel, but a
kept-alive connection stays with the worker that accepted it. `/metrics` is per worker (each has its
own registry), so a request for a made-up model (a 404, counted by model name) sent over the
connection marks that worker, and the marks in its `/metrics` name it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2

API_VERSION = "2023-06-01"
REQUEST_TIMEOUT = 30.0


class PinnedConnection:
    """One kept-alive connection, hence one worker process, for plain HTTP and for SDK clients."""

    def __init__(self, url: str, tag: str, index: int) -> None:
        self.url = url
        self.tag = tag
        self.http = anthropic.DefaultHttpxClient(
            base_url=url,
            timeout=REQUEST_TIMEOUT,
            limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
        )
        marked = self.http.post(
            "/v1/messages",
            json={
                "model": f"probe-{tag}-{index}",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "."}],
            },
            headers={"anthropic-version": API_VERSION, "x-api-key": f"sk-probe-{tag}-{index}"},
        )
        assert marked.status_code == 404, marked.text
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
        """The worker, named by the first mark it received."""
        marks = [int(i) for i in re.findall(rf'model="probe-{self.tag}-(\d+)"', self.metrics())]
        assert marks, "this connection's own mark is missing from its worker's metrics"
        return min(marks)

    def still_pinned(self) -> None:
        # A connection closed by the server (idle keep-alive timeout) would be reopened silently,
        # perhaps on another worker: then the results read through it would prove nothing.
        assert self.identify() == self.worker, "the connection moved to another worker"

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def every_worker(url: str, workers: int, attempts: int = 60) -> Iterator[list[PinnedConnection]]:
    """One pinned connection to each of the server's `workers` (new connections until all are found)."""
    tag, found = uuid.uuid4().hex[:12], {}
    try:
        for index in range(attempts):
            pinned = PinnedConnection(url, tag, index)
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
