"""The baseline the throttle benchmark compares Relay with: the usual Celery way of pacing a
vendor, a task with Celery's built-in `rate_limit`, one call per task, and a 429 retried after
the Retry-After the vendor sent.

Configured by the benchmark through the environment: BENCH_BROKER_URL, BENCH_SPRIG_URL,
BENCH_SPRIG_KEY, BENCH_TASK_RATE_LIMIT (Celery's format, e.g. "4/s", per worker process).
"""
from __future__ import annotations

import os

import httpx
from celery import Celery

app = Celery("bench_baseline", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,  # as Relay's
                task_default_queue="bench-baseline")


@app.task(name="bench.upsert_sprig_user", bind=True, max_retries=None,
          rate_limit=os.environ.get("BENCH_TASK_RATE_LIMIT"))
def upsert_sprig_user(self, body: dict) -> int:
    response = httpx.post(f"{os.environ['BENCH_SPRIG_URL']}/v2/users", json=body, timeout=10,
                          headers={"Authorization": f"API-Key {os.environ['BENCH_SPRIG_KEY']}"})
    if response.status_code == 429:
        raise self.retry(countdown=float(response.headers.get("Retry-After", 1)))
    response.raise_for_status()
    return response.status_code


@app.task(name="bench.noop")
def noop() -> None:
    """The reference for bench/worker_cost.py: no work but counting itself done (one INCR), so
    the benchmark knows when the queue is through."""
    _counter().incr("bench:noop")


def _counter():
    import redis

    return redis.Redis.from_url(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"))
