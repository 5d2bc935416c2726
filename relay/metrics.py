"""Relay's metrics, kept in Redis, so that one scrape of the web's GET /metrics shows what every
process on every machine counted.

Hand-written storage, prometheus-client's formatting: prometheus-client's multiprocess mode
shares files between the processes of one machine, but on a PaaS the workers are other
machines that cannot be scraped. So every process adds to counters and histogram buckets in
Redis hashes, and sets the gauges it owns; the web's collector reads them at scrape time.
Increments gather in the process (its runtime's Metrics, relay.runtime) and a thread of its own
adds them to Redis every FLUSH_EVERY_S (one pipeline), and when the runtime closes or the
process exits: a Redis round trip per webhook was a tenth of the
intake's time. A process killed outright loses at most that last second of counts. Redis losing
its data resets the counters, which Prometheus reads as a counter reset. Writing a metric never
fails the work it measures.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import MutableMapping
from typing import Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger("relay.metrics")

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LATENCY = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
COUNTERS = {
    "relay_webhooks_total": ("Webhooks answered, by event type and outcome.", ("type", "outcome")),
    "relay_deliveries_total": (
        "Delivery runs by destination and outcome (succeeded, superseded, failed, retried, deferred).",
        ("destination", "outcome"),
    ),
    "relay_vendor_requests_total": (
        "Vendor HTTP requests by vendor and answer status (error: no answer).",
        ("vendor", "status"),
    ),
    "relay_throttle_deferrals_total": ("Vendor calls the shared throttle held back, by vendor.", ("vendor",)),
    "relay_alerts_sent_total": (
        "Alerts a sink accepted, by alert type, status (opened, repeat, resolved, test) and sink.",
        ("type", "status", "sink"),
    ),
    "relay_alert_send_failures_total": ("Alert sends that failed (each try), by sink.", ("sink",)),
}
HISTOGRAMS = {
    "relay_vendor_request_duration_seconds": ("Vendor HTTP request time, by vendor.", ("vendor",), SECONDS),
    "relay_delivery_latency_seconds": (
        "From the webhook's receipt to the delivery's end, by destination.",
        ("destination",),
        LATENCY,
    ),
}
GAUGES = {
    "relay_breaker_open": ("1 while the vendor's circuit breaker is open or half-open.", ("vendor",)),
}
# Read at scrape time (web.metrics), not stored: from the store, and the reserves' daily reading.
SCRAPE_GAUGES = {
    "relay_parked_deliveries": (
        "Pending deliveries a reserve parked, by destination and reserve lane (live, retry, catch-up).",
        ("destination", "lane"),
    ),
    "relay_held_deliveries": (
        "Pending deliveries of a held destination, by destination and reserve lane.",
        ("destination", "lane"),
    ),
    "relay_vendor_daily_remaining": ("The vendor's daily calls remaining, as its newest answer said.", ("vendor",)),
    "relay_vendor_daily_limit": ("The vendor's daily call limit, as its newest answer said.", ("vendor",)),
}
_KEY = "relay:metrics:"
FLUSH_EVERY_S = 1.0


class Metrics:
    def __init__(self, client: redis.Redis, flush_every_s: float = FLUSH_EVERY_S):
        self._client, self._flush_every_s = client, flush_every_s
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()  # (hash, field) -> increment
        self._sums: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._flusher: threading.Thread | None = None  # started by the first count (a fork resets it: relay.runtime)
        self._stopping = threading.Event()

    def count(self, name: str, by: int = 1, **labels: str) -> None:
        self._add(self._counts, _KEY + name, _field(COUNTERS[name][1], labels), by)

    def observe(self, name: str, value: float, **labels: str) -> None:
        _, names, buckets = HISTOGRAMS[name]
        values = [str(labels[n]) for n in names]
        bucket = bisect_left(buckets, value)
        le = str(buckets[bucket]) if bucket < len(buckets) else "+Inf"
        self._add(self._counts, _KEY + name, json.dumps([*values, le]), 1)
        self._add(self._sums, _KEY + name, json.dumps([*values, "+sum"]), value)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Gauges are rare and owned by one process: written at once."""
        self._pipeline(lambda pipe: pipe.hset(_KEY + name, _field(GAUGES[name][1], labels), value))

    def flush(self) -> None:
        """Add what this process counted to Redis; kept for the next flush if Redis is away."""
        with self._lock:
            counts, sums, self._counts, self._sums = self._counts, self._sums, Counter(), defaultdict(float)
        if not counts and not sums:
            return

        def write(pipe):
            for (key, field), by in counts.items():
                pipe.hincrby(key, field, by)
            for (key, field), by in sums.items():
                pipe.hincrbyfloat(key, field, by)

        if not self._pipeline(write):
            with self._lock:
                self._counts.update(counts)
                for key, by in sums.items():
                    self._sums[key] += by

    def _add(self, into: MutableMapping[tuple[str, str], Any], key: str, field: str, by: float) -> None:
        with self._lock:
            into[(key, field)] += by
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, daemon=True, name="relay-metrics")
                self._flusher.start()

    def _flush_forever(self) -> None:
        atexit.register(self.close)
        while not self._stopping.wait(self._flush_every_s):
            self.flush()

    def close(self) -> None:
        """Stop the flushing thread, after its flush under way, and add what is left (also at exit)."""
        self._stopping.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread() and flusher.is_alive():
            flusher.join(timeout=self._flush_every_s + 10)  # a flush is bounded by the client's socket timeout
        self.flush()

    def forget_inherited(self) -> None:
        """In a forked child (relay.runtime): the parent's counts are the parent's to add, and
        the child has no flushing thread until its first count starts one."""
        self._lock = threading.Lock()  # a fork may have copied it held
        self._counts, self._sums = Counter(), defaultdict(float)
        self._flusher = None

    def _pipeline(self, commands) -> bool:
        try:
            pipe = self._client.pipeline(transaction=False)
            commands(pipe)
            pipe.execute()
            return True
        except redis.RedisError as exc:
            log.debug("metric not recorded (%s)", type(exc).__name__)
            return False

    def families(self):
        """Everything stored (this process's counts flushed first), as prometheus-client metric
        families."""
        self.flush()
        for name, (documentation, labels) in COUNTERS.items():
            family = CounterMetricFamily(name.removesuffix("_total"), documentation, labels=labels)
            for values, count in self._read(name):
                family.add_metric(values, float(count))
            yield family
        for name, (documentation, labels) in GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for values, value in self._read(name):
                family.add_metric(values, float(value))
            yield family
        for name, (documentation, labels, buckets) in HISTOGRAMS.items():
            yield _histogram(name, documentation, labels, buckets, self._read(name))

    def _read(self, name: str) -> list[tuple[list[str], bytes]]:
        # redis-py types its commands for the async client too; this one is synchronous.
        stored = cast(dict[bytes, bytes], self._client.hgetall(_KEY + name))
        return [(json.loads(field), value) for field, value in stored.items()]


def _field(names: tuple[str, ...], labels: dict) -> str:
    return json.dumps([str(labels[n]) for n in names])


def _histogram(name, documentation, labels, buckets, stored) -> HistogramMetricFamily:
    series: dict[tuple, dict] = {}
    for key, value in stored:
        *values, part = key
        series.setdefault(tuple(values), {})[part] = float(value)
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, parts in sorted(series.items()):
        cumulative, rows = 0.0, []
        for bound in [*map(str, buckets), "+Inf"]:
            cumulative += parts.get(bound, 0.0)
            rows.append((bound, cumulative))
        family.add_metric(list(values), rows, sum_value=parts.get("+sum", 0.0))
    return family
