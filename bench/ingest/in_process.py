"""The intake's cost in instructions, which a shared machine's load does not change: posts
new_referral webhooks for new subscribers through `Flask.test_client` (Flask, validation, the
store on PostgreSQL: the web process's whole path, without gunicorn and the network).

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        python -m bench.ingest.in_process 350 --redis-url redis://127.0.0.1:6379/14
    # the same with 50; (I refs of 350 - I refs of 50) / 300 = instructions per webhook

Both runs start the same way (imports, the app, 50 warm-up webhooks), so the difference is the
webhooks alone. To count another checkout's intake, run it from that checkout's root (copy this file in first if it lacks it).
It recreates the database --database (relay_bench_ingest_in_process; not run.py's, so both can
run at once; a database each for runs side by side). `--app bare+insert` (or `bare`) counts the
reference apps of run.py the same way, so that Relay's count has its floor beside it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path

import psycopg

from testbed.services import PG_URL, migrated_from_scratch

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("webhooks", type=int)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--database", default="relay_bench_ingest_in_process", help="recreated")
    parser.add_argument("--app", choices=("relay", "bare+insert", "bare"), default="relay")
    args = parser.parse_args()
    database = migrated_from_scratch(f"{PG_URL.rsplit('/', 1)[0]}/{args.database}")
    os.environ.update({
        "DATABASE_URL": database, "REDIS_URL": args.redis_url, "SPARKLOOP_WEBHOOK_TOKEN": "bench-token",
        "SPRIG_API_KEY": "bench", "SPRUCE_API_TOKEN": "bench", "LOG_FORMAT": "json",
        "BARE_DATABASE_URL": database.replace("postgresql+psycopg://", "postgresql://"),
    })
    if args.app == "relay":
        from web import create_app

        client = create_app().test_client()
    else:
        from bench.ingest.run import BARE_TABLE

        with psycopg.connect(os.environ["BARE_DATABASE_URL"], autocommit=True) as connection:
            connection.execute(BARE_TABLE)
        module = "bare_insert_app" if args.app == "bare+insert" else "bare_app"
        client = importlib.import_module(f"bench.ingest.{module}").app.test_client()
    logging.disable(logging.INFO)  # the webhook's log line: the same in every checkout
    template = (HERE / "unique.lua").read_text().split("local template = '")[1].split("'\n")[0]
    tag = time.time_ns()

    def post(n: int) -> None:
        body = template.replace("%s", f"{tag}_{n}")
        answer = client.post("/webhooks/sparkloop", data=body,
                             headers={"Content-Type": "application/json", "SparkLoop-Token": "bench-token"})
        assert answer.status_code == 200, answer.status_code

    for n in range(-50, 0):
        post(n)
    started = time.process_time()
    for n in range(args.webhooks):
        post(n)
    print(f"{args.webhooks} webhooks, {(time.process_time() - started) / max(args.webhooks, 1) * 1000:.3f} ms CPU each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
