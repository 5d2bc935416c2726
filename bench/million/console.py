"""The console's pages against a million events (bench/million/generate.py builds them).

    python -m bench.million.console [--runs 20] [--url URL] [--redis redis://127.0.0.1:6379/14]

Builds the web app on the bench database with the console on, signs in as an operator (an
account `bench@relay.localhost` is added the first time), then loads each page once to warm the
caches and --runs times more through Flask's test client: the server's own time (routing, the
operations' queries, rendering), no network. Prints a Markdown table of the median and the
maximum in milliseconds, and whether the maximum is under 200 ms; BENCHMARKS.md's section
"The console on a million events" is one run's table. Its Redis db is emptied afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from urllib.parse import urlencode

import redis
import sqlalchemy as sa

from operations.accounts import add_account, find_account
from operations.audit import Actor
from operations.failures import failure_groups, window_start
from relay.models import Delivery, Event, EventSubject, utcnow
from relay.runtime import Runtime
from testbed.console import CONSOLE_KEY, PASSWORD, post_form, sign_in
from web import create_app

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/relay_bench_million"
EMAIL = "bench@relay.localhost"
TARGET_MS = 200


def build_app(url: str, redis_url: str):
    env = {
        "SPARKLOOP_WEBHOOK_TOKEN": "bench-token",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "SPRIG_API_KEY": "bench-sprig-key",
        "SPRUCE_API_TOKEN": "bench-spruce-token",
        "RELAY_CONSOLE_SECRET_KEY": CONSOLE_KEY,
        "RELAY_INSTANCE_PATH": tempfile.mkdtemp(prefix="relay-bench-console-"),
        "LOG_FORMAT": "text",
    }
    app = create_app(env)
    runtime = Runtime.of(app)
    runtime.db.upgrade()  # the console's own indexes, if the data set predates them
    if find_account(runtime, EMAIL) is None:
        add_account(runtime, EMAIL, "operator", PASSWORD, actor=Actor("bench", "cli"))
    return app


def pages(app) -> list[tuple[str, str]]:
    """(case, URL): every page, the Events page with each filter."""
    runtime = Runtime.of(app)
    with runtime.session() as session:
        newest = session.scalar(sa.select(sa.func.max(Event.id)))
        failed_event = session.scalar(
            sa.select(Delivery.event_id).where(Delivery.status == "failed").order_by(Delivery.id.desc()).limit(1)
        )
        email_digest = session.scalar(
            sa.select(EventSubject.digest)
            .where(EventSubject.kind == "email")
            .order_by(EventSubject.event_id.desc())
            .limit(1)
        )
    since = window_start(7)
    biggest = max(failure_groups(runtime, since).groups, key=lambda g: g.count)
    confirm = urlencode({"group": biggest.group.text, "since": since.isoformat()})
    day_ago = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    month_ago = (utcnow() - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    return [
        ("Overview", "/console/"),
        ("Events", "/console/events"),
        ("Events, Status failed", "/console/events?status=failed"),
        ("Events, Type reward_redeemed", "/console/events?type=reward_redeemed"),
        ("Events, Destination spruce", "/console/events?destination=spruce"),
        ("Events, Received after a day ago", f"/console/events?received_after={day_ago}"),
        ("Events, Received before 30 days ago", f"/console/events?received_before={month_ago}"),
        ("Events, one person (email search)", f"/console/events?person={email_digest}"),
        ("Events, Older (second page)", f"/console/events?older_than={newest - 50}"),
        (f"Event (failed, id {failed_event})", f"/console/events/{failed_event}"),
        ("Event, Replay confirmation", f"/console/events/{failed_event}/replay"),
        ("Failures", "/console/failures"),
        ("Failures, 30 days", "/console/failures?days=30"),
        (f"Failures, Replay confirmation ({biggest.count} deliveries)", f"/console/failures/replay?{confirm}"),
        ("Audit log", "/console/audit"),
        ("Audit log, Action events.replay", "/console/audit?action=events.replay"),
    ]


def timed(client, url: str, runs: int) -> list[float]:
    answer = client.get(url)
    assert answer.status_code == 200, (url, answer.status_code, answer.get_data(as_text=True)[:500])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, url
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    app = build_app(args.url, args.redis)
    client = app.test_client()
    assert sign_in(client, EMAIL).status_code == 302, "the bench account did not sign in"
    load_before = os.getloadavg()
    rows = []
    try:
        for case, url in pages(app):
            times = timed(client, url, args.runs)
            rows.append((case, statistics.median(times), max(times)))
            print(f"{case}: median {rows[-1][1]:.1f} ms, max {rows[-1][2]:.1f} ms", flush=True)
    finally:
        post_form(client, "/console/sign-out", page="/console/")
        Runtime.of(app).close()
        flush = redis.Redis.from_url(args.redis)
        flush.flushdb()
        flush.close()
    print()
    print(
        f"{platform.node()}: {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; {args.runs} loads a page after one to warm up\n"
    )
    print("| page | median ms | max ms | max under 200 ms |")
    print("|---|---:|---:|---|")
    for case, median, worst in rows:
        print(f"| {case} | {median:.1f} | {worst:.1f} | {'yes' if worst < TARGET_MS else 'NO'} |")


if __name__ == "__main__":
    main()
