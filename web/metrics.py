"""GET /metrics: Prometheus text for the whole deployment, from one scrape target (the web).

What every process counted comes from Redis (relay.metrics); the backlog gauges are read from
the store at scrape time. With METRICS_TOKEN set, the scrape must send `Authorization: Bearer
<token>`: 401 without one, 403 with another (compared in constant time)."""

from __future__ import annotations

import hmac

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
