"""The broker as every process sees it: Celery wired to the Flask app (Flask's own
`celery_init_app` pattern), the task names and queues, and publishing delivery work by name.

The database, not the broker, is the source of truth. The web only stores: a new delivery is
pending with no `enqueued_at`, and the workers' dispatcher (workers.dispatch, a step of every
worker) publishes it within a fraction of a second. A publish that fails is only logged and
unmarked; the dispatcher's next round tries again, and the periodic sweep hands back what a
lost message left behind.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from pathlib import Path

from celery import Celery, Task
from celery.schedules import crontab
from celery.signals import setup_logging
from flask import Flask
from kombu import Queue

from relay.models import Lane
from relay.observability import configure_logging, say_as_json
from relay.runtime import Runtime

log = logging.getLogger("relay.queue")

DELIVER_TASK = "relay.deliver"
SWEEP_TASK = "relay.sweep"
SWEEP_INTERVAL = timedelta(seconds=10)
# Retention (workers.retention): once a day, unless RELAY_RETENTION_PURGE=off. At a time of day,
# not every 24 h from beat's start: a beat restarted (a daily dyno restart) or a Redis emptied
# before a day is up would otherwise put the run off again and again. A beat that was down at
# that time sends it as soon as it is back.
RETENTION_TASK = "relay.retention"
RETENTION_SCHEDULE = crontab(hour=3, minute=0)  # UTC
RETENTION_INTERVAL = timedelta(days=1)
# Alerts (operations.alerts): beat has the conditions evaluated every ALERTS_INTERVAL, when a
# sink is configured and Redis keeps the alerts' state; each alert is then sent by a task of its
# own per sink (workers.alerts), retried with backoff. Both on the catch-up queue: behind no
# live delivery; a stale evaluation is dropped (the next one is due anyway).
EVALUATE_ALERTS_TASK = "relay.alerts.evaluate"
SEND_ALERT_TASK = "relay.alerts.send"
ALERTS_INTERVAL = timedelta(seconds=30)
LIVE_QUEUE = "celery"
# Catch-up work (replays, backfills) waits in a queue of its own, so a large replay never
# stands between live deliveries and the workers (workers take from both queues in turn).
CATCH_UP_QUEUE = "relay-replay"
# Where a worker finds the task functions, and the step that publishes new deliveries; only
# worker processes load them.
TASK_MODULE = "workers.tasks"
# The alerts' tasks: sending (the engine's layer) and evaluating, which reads the operations'
# views (the Failures page's groups, the overview's rate limits, doctor's sweep check).
ALERT_TASK_MODULES = ("workers.alerts", "operations.alerts")
DISPATCH_STEP = "workers.dispatch:Dispatcher"


class RelayCelery(Celery):
    """Celery holding the runtime of the process that built it (relay.runtime): a task reads it
    from the Flask app (Flask's pattern), but the worker's signals and its dispatcher step run
    outside any task and take it from here."""

    def __init__(self, main: str, runtime: Runtime, **kwargs):
        super().__init__(main, **kwargs)
        self.runtime = runtime


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    runtime = Runtime.of(app)
    config = runtime.config
    celery_app = RelayCelery(app.name, runtime, task_cls=FlaskTask)
    celery_app.conf.update(
        broker_url=config.broker_url,
        broker_transport_options=_transport_options(config.broker_url, app.instance_path),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_ignore_result=True,
        # A worker killed mid-delivery must not lose the message: ack only after the task ran.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        beat_schedule=beat_schedule(config),
        task_queues=[Queue(LIVE_QUEUE), Queue(CATCH_UP_QUEUE)],
        task_default_queue=LIVE_QUEUE,
        imports=[TASK_MODULE, *ALERT_TASK_MODULES],
        # SIGTERM (a deploy; Heroku sends SIGKILL 30 s later): tasks under way get 20 s to
        # finish; then they are stopped, and their deliveries handed back at once (workers.engine).
        worker_soft_shutdown_timeout=config.shutdown_grace_s,
        # celery-redbeat (beat -S redbeat.RedBeatScheduler): a lock in Redis keeps a second beat idle.
        # It is extended at every tick, hence a tick at least every sweep interval.
        redbeat_redis_url=config.redis_url,
        redbeat_redis_options={},
        redbeat_lock_timeout=int(SWEEP_INTERVAL.total_seconds() * 5),
        beat_max_loop_interval=SWEEP_INTERVAL.total_seconds(),
    )
    if config.broker_url.startswith("rediss://"):
        celery_app.conf.broker_use_ssl = {"ssl_cert_reqs": config.redis_ssl_cert_reqs}
        celery_app.conf.redbeat_redis_use_ssl = {"ssl_cert_reqs": config.redis_ssl_cert_reqs}
    # Celery's own lines go through Relay's handler, in LOG_FORMAT, instead of its own setup.
    celery_app.conf.worker_hijack_root_logger = False
    setup_logging.connect(lambda **_: _worker_logging(config.log_format), weak=False, dispatch_uid="relay-logging")
    celery_app.steps["worker"].add(DISPATCH_STEP)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def beat_schedule(config) -> dict:
    """What beat sends: the sweep every SWEEP_INTERVAL; unless turned off, the retention run once
    a day; and, when an alert sink is configured and REDIS_URL is set (the alerts' state is
    shared there), the alert check every ALERTS_INTERVAL; those two on the catch-up queue (behind
    no live delivery)."""
    schedule = {"relay-sweep": {"task": SWEEP_TASK, "schedule": SWEEP_INTERVAL}}
    if config.retention_purge_daily:
        schedule["relay-retention"] = {
            "task": RETENTION_TASK,
            "schedule": RETENTION_SCHEDULE,
            "options": {"queue": CATCH_UP_QUEUE},
        }
    if config.alert_sinks and config.redis_url:
        schedule["relay-alerts"] = {
            "task": EVALUATE_ALERTS_TASK,
            "schedule": ALERTS_INTERVAL,
            "options": {"queue": CATCH_UP_QUEUE, "expires": ALERTS_INTERVAL.total_seconds()},
        }
    return schedule


def _worker_logging(style: str) -> None:
    configure_logging(style)
    if style == "json":  # the shutdown messages Celery prints itself, as log lines too
        import celery.apps.worker

        celery.apps.worker.safe_say = say_as_json


def _transport_options(broker_url: str, instance_path: str) -> dict:
    if broker_url.startswith("filesystem://"):
        # The embedded broker for `relay dev`: queue files under instance/, no server needed.
        folder = Path(instance_path) / "broker"
        for name in ("queue", "processed", "control"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
        }
    # max_retries: a publish tries to connect once, not for broker_connection_timeout (3 s) twice
    # over: a dispatcher round with Redis down ends at once, and the next one publishes.
    return {"socket_connect_timeout": 3, "socket_timeout": 10, "visibility_timeout": 3600, "max_retries": 1}


def queue_for(lane: str) -> str:
    return CATCH_UP_QUEUE if lane == Lane.CATCH_UP else LIVE_QUEUE


def publish(celery_app: Celery, delivery_ids, queue: str = LIVE_QUEUE, connection=None) -> list[int]:
    """Publish deliver(id) for each id on `queue` through `celery_app`, as one batch (kombu's
    Producer.batch: on Redis, one pipeline and one client for them all, where a publish each
    built a client and a producer of its own); return the ids that reached the broker: all of
    them, or none when it failed (some may have gone out: a second publish of a delivery is
    harmless, only one run can claim it). Touches no database. `connection`: a broker
    connection of the caller's own (a thread's: kombu's Redis connections are not to be shared
    between threads)."""
    ids = list(delivery_ids)
    if not ids:
        return []
    try:
        with _producer(celery_app, connection) as producer, producer.batch():
            for delivery_id in ids:
                # retry=False: with the broker down, give up now; the sweep catches up.
                celery_app.send_task(DELIVER_TASK, args=[delivery_id], retry=False, queue=queue, producer=producer)
    except Exception as exc:  # any broker failure: kombu raises several unrelated types
        log.warning("broker unavailable, %d deliveries left for the sweep (%s)", len(ids), type(exc).__name__)
        return []
    return ids


def _producer(celery_app: Celery, connection) -> contextlib.AbstractContextManager:
    if connection is None:
        return celery_app.producer_or_acquire()
    return contextlib.nullcontext(celery_app.amqp.Producer(connection, auto_declare=False))
