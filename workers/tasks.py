"""Celery tasks: thin wrappers that pass ids to plain functions."""
from __future__ import annotations

from celery import shared_task

from workers.delivery import run_delivery
from workers.sweep import sweep


@shared_task(name="relay.deliver")
def deliver(delivery_id: int) -> str:
    return run_delivery(delivery_id)


@shared_task(name="relay.sweep")
def sweep_task() -> dict[str, int]:
    return sweep()
