"""Celery wired to the Flask app (Flask's own Celery pattern): tasks run in an app context."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from celery import Celery, Task
from flask import Flask
from kombu import Queue

from workers.queue import LIVE_QUEUE, REPLAY_QUEUE

SWEEP_INTERVAL = timedelta(seconds=30)


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    config = app.config["RELAY"]
    celery_app = Celery(app.name, task_cls=FlaskTask)
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
        beat_schedule={"relay-sweep": {"task": "relay.sweep", "schedule": SWEEP_INTERVAL}},
        # Every worker takes from both; replays have their own queue (workers/queue.py).
        task_queues=[Queue(LIVE_QUEUE), Queue(REPLAY_QUEUE)],
        task_default_queue=LIVE_QUEUE,
        imports=["workers.tasks"],
    )
    if config.broker_url.startswith("rediss://"):
        celery_app.conf.broker_use_ssl = {"ssl_cert_reqs": config.redis_ssl_cert_reqs}
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


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
    return {"socket_connect_timeout": 3, "socket_timeout": 10, "visibility_timeout": 3600}
