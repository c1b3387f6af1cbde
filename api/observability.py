"""Prometheus metrics for one app instance: requests and latency by route template, jobs submitted.

Each app gets its own registry so that several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("narrownet_http_requests_total", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("narrownet_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.jobs_submitted = Counter("narrownet_jobs_submitted_total", "Jobs created (not replays)",
                                      ["queue"], registry=self.registry)
        self.enqueue_failures = Counter("narrownet_enqueue_failures_total",
                                        "Jobs committed but not sent to the broker", ["queue"],
                                        registry=self.registry)
        self.submissions_per_transaction = Histogram(
            "narrownet_submissions_per_transaction",
            "Plain submissions committed together in one transaction (PostgreSQL; api/grouping.py)",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32))
        self.polls_per_read = Histogram(
            "narrownet_job_polls_per_read", "GET /v1/jobs/{id} answered by one SELECT (PostgreSQL; api/grouping.py)",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32))


class MetricsMiddleware:
    """Counts every HTTP request under its route template (`/v1/jobs/{job_id}`), never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
