"""Prometheus metrics, one registry per server (several servers may share a test process).

Requests are counted in plain dicts and turned into metric families only when `/metrics` is
scraped: prometheus_client's `Counter.inc` takes a lock and looks up its child on every call, which
cost more per request than the rest of the bookkeeping together. The library still renders the
exposition format, through a custom collector.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mockserver.journal import RequestRecord

if TYPE_CHECKING:
    from mockserver.catalog import Catalog

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER_MODEL = "other"  # the model label of every request for a model the server does not have
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
_OTPS_BUCKETS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 1000, 10_000)


class Histogram:
    """Observations per label value: a count per bucket (the last one is +Inf) and their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts: dict[str, list[int]] = {}
        self.sums: Counter[str] = Counter()

    def observe(self, label: str, value: float) -> None:
        counts = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(self.bounds) + 1)
        counts[bisect.bisect_left(self.bounds, value)] += 1  # `le` buckets: value <= bound
        self.sums[label] += value

    def family(self, name: str, documentation: str, label: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=[label])
        for value, counts in self.counts.items():
            running, buckets = 0, []
            for bound, count in zip((*map(_bound, self.bounds), "+Inf"), counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric([value], buckets, self.sums[value])
        return family


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (model, speed, status)
        self.input_tokens: Counter[str] = Counter()  # by speed
        self.output_tokens: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()  # by exhausted limit
        self.faults: Counter[str] = Counter()  # by fault name
        self.open_streams = 0
        self.ttft = Histogram(_TTFT_BUCKETS)
        self.otps = Histogram(_OTPS_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def observe(self, record: RequestRecord, catalog: Catalog) -> None:
        """Count a finished request. Every label value is one the server chose or validated (speed,
        status, limit and fault names), or a model of `catalog`: a client must not be able to add
        series by asking for models that do not exist."""
        path = record.path
        if not path.startswith("/v1/messages") or path.startswith("/v1/messages/batches"):
            return
        speed = record.speed or "standard"
        self.requests[(_model_label(record.model, catalog), speed, str(record.status))] += 1
        if record.usage:
            self.input_tokens[speed] += record.usage.get("input_tokens", 0)
        if record.delivered_output_tokens:
            self.output_tokens[speed] += record.delivered_output_tokens
        if record.rate_limited_by:
            self.rate_limited[record.rate_limited_by] += 1
        if record.fault:
            self.faults[record.fault] += 1
        if record.ttft_seconds is not None and record.status == 200:
            self.ttft.observe(speed, record.ttft_seconds)
        if record.output_tokens_per_second is not None:
            self.otps.observe(speed, record.output_tokens_per_second)

    def collect(self) -> Iterator[Metric]:
        """The registry's view, built at scrape time."""
        yield _counter(
            "mockserver_requests", "API requests answered", ["model", "speed", "status"], self.requests
        )
        yield _counter(
            "mockserver_input_tokens", "Input tokens of answered requests", ["speed"], self.input_tokens
        )
        yield _counter("mockserver_output_tokens", "Output tokens delivered", ["speed"], self.output_tokens)
        yield _counter(
            "mockserver_rate_limited",
            "Requests refused with 429, by exhausted limit",
            ["limit"],
            self.rate_limited,
        )
        yield _counter("mockserver_faults", "Faults fired, by name", ["fault"], self.faults)
        yield GaugeMetricFamily("mockserver_open_streams", "SSE streams in flight", value=self.open_streams)
        yield self.ttft.family("mockserver_time_to_first_token_seconds", "Time to first token", "speed")
        yield self.otps.family(
            "mockserver_output_tokens_per_second",
            "Delivered output tokens per second after the first token",
            "speed",
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _counter(name: str, documentation: str, labels: list[str], counts: Counter) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in counts.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _model_label(name: str | None, catalog: Catalog) -> str:
    if not name:
        return ""  # the request never named a model (an unreadable body)
    entry = catalog.resolve(name)
    return OTHER_MODEL if entry is None else entry.id


def _bound(bound: float) -> str:
    # prometheus_client spells bucket bounds as floats ("10.0"), whatever type they were given in.
    return repr(float(bound))
