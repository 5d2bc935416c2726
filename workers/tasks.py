"""Celery tasks: thin wrappers that pass ids to plain functions."""
from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown
from flask import current_app

from relay.metrics import flush_all
from relay.queue import DELIVER_TASK, SWEEP_TASK
from workers.engine import run_delivery
from workers.lease import hand_back_all
from workers.sweep import sweep_and_check_in


@shared_task(name=DELIVER_TASK)
def deliver(delivery_id: int) -> str:
    return run_delivery(delivery_id, current_app.config["RELAY"])


@shared_task(name=SWEEP_TASK)
def sweep_task() -> dict[str, int]:
    return sweep_and_check_in(current_app.config["RELAY"])


@worker_shutdown.connect
@worker_process_shutdown.connect
def _hand_back_running(**_):
    """A stopping worker (a deploy's SIGTERM) hands back what it did not finish, and adds what
    it counted to the shared metrics (a pool process ends without atexit)."""
    hand_back_all()
    flush_all()
