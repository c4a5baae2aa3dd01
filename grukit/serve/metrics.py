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

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
