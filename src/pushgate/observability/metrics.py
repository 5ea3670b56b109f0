"""The Prometheus metrics of one Pushgate process, in a registry of its own.

``Metrics`` is built with the runtime and handed to what it measures (no import-time
globals). Hot paths hold the labelled child they need, looked up once, so that a request or a
delivery costs a dictionary look-up and one ``inc``/``observe``. Gauges that need I/O (queue
depth) are read by ``refresh`` just before each scrape.

Each process has its own metrics: with several processes (``pushgate worker`` beside
``pushgate serve``) each serves them on its own port (``metrics_port``), and Prometheus
scrapes every process (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pushgate.observability.histogram import FastHistogram
from pushgate.observability.logs import NOTIFICATION_ID

# Seconds: from a fast answer to a slow one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Seconds a scheduled notification's fan-out started after its due time.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ReadCounters(Collector):
    """Counters kept as plain integers where they happen (no prometheus object on the hot
    path) and read at scrape time: ``add`` a name, its help and a function of the total."""

    def __init__(self) -> None:
        self._counters: list[tuple[str, str, Callable[[], int]]] = []

    def add(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._counters.append((name, documentation, read))

    def describe(self) -> Iterator[Metric]:
        for name, documentation, _ in self._counters:
            yield CounterMetricFamily(name, documentation)

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self._counters:
            yield CounterMetricFamily(name, documentation, value=read())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = FastHistogram(
            "pushgate_http_request_duration_seconds",
            "HTTP requests by face, route template, method and status class, with their "
            "latency (the _count series counts requests).",
            ["face", "route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.notifications = Counter(
            "pushgate_notifications_accepted",
            "Notifications accepted (answered as stored), by face.",
            ["face"],
            registry=r,
        )
        self.deliveries = Counter(
            "pushgate_deliveries",
            "Final or retried push delivery attempts by transport and outcome (delivered, "
            "retry_later, token_invalid, permanent_failure, expired).",
            ["transport", "outcome"],
            registry=r,
        )
        self.devices_disabled = Counter(
            "pushgate_devices_disabled",
            "Devices disabled because their provider said the token is invalid.",
            ["transport"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "pushgate_provider_batch_duration_seconds",
            "Time one transport took to send one batch of deliveries to its provider.",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "pushgate_queue_depth",
            "Jobs waiting or running in each queue (read at scrape time).",
            ["queue"],
            registry=r,
        )
        self.queue_oldest_age = Gauge(
            "pushgate_queue_oldest_job_age_seconds",
            "Seconds the oldest unfinished job of each queue has been due, waiting or claimed; "
            "0 when none is (read at scrape time).",
            ["queue"],
            registry=r,
        )
        self.scheduler_lag = Histogram(
            "pushgate_scheduler_lag_seconds",
            "For notifications sent with a due time: how long after it their fan-out started.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.sending_lag = Histogram(
            "pushgate_sending_start_lag_seconds",
            "For each part of a sending (one per offset of a local-time sending): how long "
            "after its due moment it started.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.http2_streams = Gauge(
            "pushgate_provider_http2_streams_in_flight",
            "HTTP/2 requests in flight to a provider (APNs; FCM where it speaks HTTP/2), by "
            "transport (read at scrape time).",
            ["transport"],
            registry=r,
        )
        self.db_pool_checked_out = Gauge(
            "pushgate_db_pool_checked_out_connections",
            "Database connections in use, by engine (write, read; on PostgreSQL both are one "
            "engine, reported as write) (read at scrape time).",
            ["engine"],
            registry=r,
        )
        self.read_counters = ReadCounters()
        r.register(self.read_counters)
        self.channel_connected = Gauge(
            "pushgate_channel_connected_devices",
            "Device channel connections (WebSocket, SSE) open in this process.",
            registry=r,
        )
        self.commit_batch = Histogram(
            "pushgate_group_commit_batch_size",
            "Notifications stored per group-commit transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "pushgate_group_commit_duration_seconds",
            "Time one group-commit transaction took.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)

    def accepted(self, face: str) -> Callable[[int], None]:
        """What a face calls with the id of each notification it accepted: counted, and
        carried on the request's remaining log lines (its access line) as
        ``notification_id``."""
        child = self.notifications.labels(face)

        def record(notification_id: int) -> None:
            child.inc()
            NOTIFICATION_ID.set(notification_id)

        return record

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
