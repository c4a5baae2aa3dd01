"""Prometheus metrics of one server (its own registry, so two apps in one process never share counters)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("grukit_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter("grukit_errors", "requests answered with a 4xx/5xx status", ["route", "status"],
                              registry=r)
        self.latency = Histogram("grukit_request_seconds", "request latency", ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("grukit_batch_size", "items per model call", ["run", "kind"], registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.queue = Gauge("grukit_queue_depth", "requests waiting or running", ["run", "kind"], registry=r)
        self.sessions = Gauge("grukit_active_sessions", "open streaming sessions", ["run"], registry=r)
        self._children: dict[tuple[str, int], tuple] = {}      # (route, status) -> its counters, looked up once

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = (self.requests.labels(route, str(status)),
                                       self.errors.labels(route, str(status)) if status >= 400 else None,
                                       self.latency.labels(route))
        c[0].inc()
        if c[1] is not None:
            c[1].inc()
        c[2].observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
