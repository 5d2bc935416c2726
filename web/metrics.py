"""GET /metrics: Prometheus text for the whole deployment, from one scrape target (the web).

What every process counted comes from Redis (relay.metrics); the backlog gauges and the parked
and held deliveries (operations.destinations.waiting_gauges) are read from the store at scrape
time, and each vendor's daily reading from Redis. With METRICS_TOKEN set, the scrape must send
`Authorization: Bearer <token>`: 401 without one, 403 with another (compared in constant time)."""

from __future__ import annotations

import hmac

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from relay.metrics import SCRAPE_GAUGES
from relay.models import Delivery, DeliveryStatus, utcnow
from relay.runtime import Runtime

bp = Blueprint("metrics", __name__)
WAITING = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)


class _Collector:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self):
        yield from self.runtime.metrics.families()
        with self.runtime.session() as session:
            waiting, oldest = session.execute(
                sa.select(sa.func.count(), sa.func.min(Delivery.created_at)).where(Delivery.status.in_(WAITING))
            ).one()
        pending = GaugeMetricFamily("relay_pending_deliveries", "Deliveries pending or in flight.")
        pending.add_metric([], waiting)
        age = GaugeMetricFamily(
            "relay_oldest_pending_seconds", "Age of the oldest delivery pending or in flight (0: none)."
        )
        age.add_metric([], (utcnow() - oldest).total_seconds() if oldest else 0.0)
        yield pending
        yield age
        yield from _waiting(self.runtime)


def _waiting(runtime: Runtime):
    # Imported at the first scrape: the intake's app loads no operation (tests/test_architecture).
    from operations.destinations import waiting_gauges

    found = waiting_gauges(runtime)
    parked, held = _gauge("relay_parked_deliveries"), _gauge("relay_held_deliveries")
    for family, counts in ((parked, found.parked), (held, found.held)):
        for (destination, lane), count in sorted(counts.items()):
            family.add_metric([destination, lane], count)
    remaining, limit = _gauge("relay_vendor_daily_remaining"), _gauge("relay_vendor_daily_limit")
    for vendor, day in sorted(found.daily.items()):
        remaining.add_metric([vendor], day.remaining)
        if day.limit is not None:
            limit.add_metric([vendor], day.limit)
    yield from (parked, held, remaining, limit)


def _gauge(name: str) -> GaugeMetricFamily:
    documentation, labels = SCRAPE_GAUGES[name]
    return GaugeMetricFamily(name, documentation, labels=labels)


@bp.get("/metrics")
def metrics():
    runtime = Runtime.of(current_app)
    token = runtime.config.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not given:
            return jsonify(error="metrics need Authorization: Bearer <METRICS_TOKEN>"), 401
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return jsonify(error="wrong metrics token"), 403
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(runtime))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
