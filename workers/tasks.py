"""Celery tasks: thin wrappers that pass ids to plain functions, with the process's runtime.

The engine's entry points: Flask's documented pattern runs each task in the app's context, and
only here is the app read, for its runtime (relay.runtime), which is handed on."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading

import sqlalchemy as sa
from celery import current_app as current_celery_app
from celery import shared_task
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown
from flask import current_app

from relay.models import Base
from relay.queue import CATCH_UP_QUEUE, DELIVER_TASK, RETENTION_TASK, SWEEP_TASK
from relay.runtime import Runtime
from workers.engine import run_delivery
from workers.lease import hand_back_all
from workers.retention import run_retention
from workers.sweep import sweep_and_check_in

log = logging.getLogger("relay.worker")


@shared_task(name=DELIVER_TASK)
def deliver(delivery_id: int) -> str:
    return run_delivery(delivery_id, Runtime.of(current_app))


@shared_task(name=SWEEP_TASK)
def sweep_task() -> dict[str, int]:
    return sweep_and_check_in(Runtime.of(current_app))


@shared_task(name=RETENTION_TASK)
def retention_task() -> int | None:
    """Beat's daily purge, a bounded run at a time: what it leaves goes on in the next one."""
    result = run_retention(Runtime.of(current_app))
    if result is not None and not result.complete:
        retention_task.apply_async(queue=CATCH_UP_QUEUE)
    return None if result is None else result.purged


@worker_init.connect
def _build_clients(sender, **_):
    """Before the pool forks: the vendor clients, whose first build loads the TLS roots (kept by
    the process, workers.vendor_http.tls_context), so that no pool process pays for them on its
    first delivery. The clients themselves each pool process builds again (relay.runtime)."""
    runtime = sender.app.runtime
    for destination in runtime.config.configured().values():
        destination.client(runtime)


@worker_process_init.connect
def _warm_up(**_):
    """In each new pool process, before it takes its first task: the store's and Redis's first
    connections (a pool process forgets its parent's: relay.runtime), the store's tables read
    once on that connection (a new PostgreSQL backend loads each table's catalog entries on
    first use), and the destinations' delivery modules imported. Celery hands a pool process no
    task until this returns, so it waits at most WARM_UP_WAIT_S (billiard ends a process that is
    not up within 4 s); what is left goes on in the background."""
    warming = threading.Thread(target=warm_up, args=(_runtime(),), name="relay-warm-up", daemon=True)
    warming.start()
    warming.join(timeout=WARM_UP_WAIT_S)


WARM_UP_WAIT_S = 2.0
NO_DELIVERY = 0  # ids start at 1


def warm_up(runtime: Runtime) -> None:
    """What a pool process's first delivery would otherwise pay for (_warm_up)."""
    try:
        with runtime.db.run_engine.connect() as connection:  # the pool the runs take from
            for table in Base.metadata.sorted_tables:
                connection.execute(sa.select(sa.literal(1)).select_from(table).limit(0))
        run_delivery(NO_DELIVERY, runtime)  # a claim that finds nothing: compiled, planned once
        runtime.redis.ping()
    except Exception as exc:  # away now: the first delivery connects (or is retried)
        log.info("pool process not warmed up (%s)", type(exc).__name__)
    for destination in runtime.config.configured().values():
        with contextlib.suppress(ImportError):  # a destination without the usual layout
            importlib.import_module(f"{destination.deliver.__module__}.delivery")


@worker_shutdown.connect
@worker_process_shutdown.connect
def _hand_back_running(**_):
    """A stopping worker (a deploy's SIGTERM) hands back what it did not finish, and adds what
    it counted to the shared metrics (a pool process ends without atexit)."""
    runtime = _runtime()
    hand_back_all(runtime)
    runtime.metrics.flush()


def _runtime() -> Runtime:
    """For the worker's signals, which run outside any task: the runtime the worker's Celery app
    was built with (relay.queue.RelayCelery)."""
    return current_celery_app.runtime
