"""Prometheus metrics of one service instance (its own registry, so tests stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "atelier_sd_queue_depth", "Jobs waiting for the device", registry=self.registry
        )
        self.job_seconds = Histogram(
            "atelier_sd_job_seconds",
            "Generation time per job",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120),
        )
        self.images = Counter(
            "atelier_sd_images_generated", "Images generated", registry=self.registry
        )
        self.requests = Counter(
            "atelier_sd_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
