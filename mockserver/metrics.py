"""Prometheus metrics, one registry per server (several servers may share a test process)."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mockserver.journal import RequestRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
M = TypeVar("M", Counter, Histogram)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
_OTPS_BUCKETS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 1000, 10_000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.requests = Counter(
            "mockserver_requests",
            "API requests answered",
            ["model", "speed", "status"],
            registry=self.registry,
        )
        self.input_tokens = Counter(
            "mockserver_input_tokens", "Input tokens of answered requests", ["speed"], registry=self.registry
        )
        self.output_tokens = Counter(
            "mockserver_output_tokens", "Output tokens delivered", ["speed"], registry=self.registry
        )
        self.rate_limited = Counter(
            "mockserver_rate_limited",
            "Requests refused with 429, by exhausted limit",
            ["limit"],
            registry=self.registry,
        )
        self.faults = Counter("mockserver_faults", "Faults fired, by name", ["fault"], registry=self.registry)
        self.open_streams = Gauge("mockserver_open_streams", "SSE streams in flight", registry=self.registry)
        self.ttft = Histogram(
            "mockserver_time_to_first_token_seconds",
            "Time to first token",
            ["speed"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.otps = Histogram(
            "mockserver_output_tokens_per_second",
            "Delivered output tokens per second after the first token",
            ["speed"],
            buckets=_OTPS_BUCKETS,
            registry=self.registry,
        )

    def observe(self, record: RequestRecord) -> None:
        if not record.path.startswith("/v1/messages") or record.path.startswith("/v1/messages/batches"):
            return
        speed = record.speed or "standard"
        self._child(self.requests, record.model or "", speed, str(record.status)).inc()
        if record.usage:
            self._child(self.input_tokens, speed).inc(record.usage.get("input_tokens", 0))
        if record.delivered_output_tokens:
            self._child(self.output_tokens, speed).inc(record.delivered_output_tokens)
        if record.rate_limited_by:
            self.rate_limited.labels(record.rate_limited_by).inc()
        if record.fault:
            self.faults.labels(record.fault).inc()
        if record.ttft_seconds is not None and record.status == 200:
            self._child(self.ttft, speed).observe(record.ttft_seconds)
        if record.output_tokens_per_second is not None:
            self._child(self.otps, speed).observe(record.output_tokens_per_second)

    def _child(self, metric: M, *labels: str) -> M:
        # prometheus_client's labels() validates and locks on every call; remember the children.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
