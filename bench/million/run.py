"""Relay's store queries against a million events (bench/million/generate.py builds them).

    python -m bench.million.run [--runs 7] [--out bench/million/RESULTS.md] [--only TEXT]
                                [--compare bench/million/BEFORE.md]

Each case runs the statements the product issues, built by the product's own code, through a
session on the bench database: `relay events list` with each filter (operations.events.list_query:
operations.filters.EventFilter.apply, and the selectinload of the deliveries), replay's matching
query (operations.replay.matching_query), `relay events stats` (operations.stats.store_stats), a
purge's count and batch (workers.retention.purge_*, delete_events), the sweep's statements
(workers.sweep.release_expired_leases, forget_enqueued, forget_overdue) and the dispatcher's
select (captured from workers.dispatch.dispatch itself: its first statement, then aborted). Writes
are rolled back (a purge batch still meets other rows from run to run: PostgreSQL's synchronized
sequential scans start where the previous one stopped). Then the whole commands `relay events list`,
`relay events stats` and `relay events purge --dry-run`, through Flask's CLI runner (no vendor
credentials: stats shows no vendor and reads no Redis).

A case runs once to warm the caches, then --runs times: the table gives the median and the
maximum wall time (milliseconds, from the first statement sent to the last row read) and
says whether the maximum is under 200 ms. RESULTS.md gets the table, the machine (and its load
average before and after: the machine may be shared), the database's settings and indexes,
and for every statement of every case its SQL and its plan (EXPLAIN (ANALYZE, BUFFERS), in a
transaction rolled back afterwards). --compare adds the figures of an earlier RESULTS.md (by
case name) to the table. BENCHMARKS.md's section "A million events" is RESULTS.md as one run
wrote it (the file itself is not kept in git: each run rewrites it).
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from operations.events import list_query
from operations.filters import EventFilter
from operations.replay import matching_query
from operations.stats import store_stats
from relay.app import create_base_app
from relay.db import Database
from relay.durations import parse_when
from relay.models import utcnow
from relay.runtime import Runtime
from web.cli import main as relay_main  # the whole commands, as an operator runs them
from workers import dispatch as dispatch_module
from workers.retention import delete_events, purge_batch, purge_conditions, purge_count
from workers.sweep import forget_enqueued, forget_overdue, release_expired_leases

HERE = Path(__file__).resolve().parent

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/relay_bench_million"
LIMIT_MS = 200
DAY_S = 86400.0
LIST_LIMIT = 50  # `relay events list`'s default --limit


@dataclass
class Case:
    name: str                      # what an operator (or a worker) runs
    run: Callable[[Session], object]


class Capture:
    """The statements an engine sends while `on`: (SQL with placeholders, parameters)."""

    def __init__(self, engine: sa.Engine):
        self.on, self.statements = False, []
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if self.on:
            self.statements.append((statement, parameters))


class Aborted(Exception):
    """Raised by `statements_until_a_lock` once it has what it wanted."""


def statements_until_a_lock(engine: sa.Engine, function: Callable[[], object]) -> list[tuple[str, dict]]:
    """The statements `function` sends through `engine` up to its first FOR UPDATE, which is
    stopped before it runs."""
    seen = []

    def stop(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))
        if "FOR UPDATE" in statement:
            raise Aborted

    sa.event.listen(engine, "before_cursor_execute", stop)
    try:
        function()
    except Aborted:
        pass
    finally:
        sa.event.remove(engine, "before_cursor_execute", stop)
    return seen


def cases(db: Database) -> list[Case]:
    now = utcnow()

    def when(text: str) -> datetime:  # as --since and --until read it
        return parse_when(text, now)

    def listing(**filters) -> Callable[[Session], object]:
        return lambda session: session.scalars(list_query(EventFilter(**filters), LIST_LIMIT)).all()

    def matching(**filters) -> Callable[[Session], object]:
        return lambda session: session.scalars(matching_query(EventFilter(**filters))).all()

    def purging(age_days: float, failed_days: float) -> Callable[[Session], object]:
        def run(session):
            batch = purge_batch(session, sa.or_(*purge_conditions(now, age_days * DAY_S, failed_days * DAY_S)))
            return delete_events(session, batch) if batch else 0
        return run

    # The dispatcher's statements, exactly as workers.dispatch sends them (its module is not
    # ours to split): its count of deliveries out, then its select, FOR UPDATE SKIP LOCKED, so
    # that one runs in a transaction rolled back like the writes.
    (count_sql, count_params), (dispatch_sql, dispatch_params) = statements_until_a_lock(
        db.engine, lambda: dispatch_module.dispatch(db, celery_app=None))  # stops at its lock, before publishing
    assert "FOR UPDATE SKIP LOCKED" in dispatch_sql, dispatch_sql

    return [
        Case("events list", listing()),
        Case("events list --status failed", listing(statuses=("failed",))),
        Case("events list --status received", listing(statuses=("received",))),
        Case("events list --status invalid", listing(statuses=("invalid",))),
        Case("events list --status unhandled", listing(statuses=("unhandled",))),
        Case("events list --type new_offer_lead", listing(types=("new_offer_lead",))),
        Case("events list --type reward_redeemed --status invalid",
             listing(types=("reward_redeemed",), statuses=("invalid",))),
        Case("events list --destination spruce", listing(destination="spruce")),
        Case("events list --destination sprig --status failed", listing(destination="sprig", statuses=("failed",))),
        Case("events list --since 24h", listing(since=when("24h"))),
        Case("events list --until 30d", listing(until=when("30d"))),
        Case("events list --until 80d", listing(until=when("80d"))),
        Case("events list --since 7d --until 6d", listing(since=when("7d"), until=when("6d"))),
        Case("events list --error 'Service Unavailable'", listing(error="Service Unavailable")),
        Case("events list --error 'givenName'", listing(error="givenName")),
        Case("events list --error 'no such error'", listing(error="no such error")),
        Case("events list --destination spruce --error 400", listing(destination="spruce", error="400")),
        Case("events list --status failed --since 7d --error timeout",
             listing(statuses=("failed",), since=when("7d"), error="timeout")),
        Case("events replay --status failed (matching)", matching(statuses=("failed",))),
        Case("events replay --status failed --destination spruce (matching)",
             matching(statuses=("failed",), destination="spruce")),
        Case("events replay --status failed --since 7d (matching)", matching(statuses=("failed",), since=when("7d"))),
        Case("events replay --status invalid (matching)", matching(statuses=("invalid",))),
        Case("events replay --error ReadTimeout --since 2d (matching)", matching(error="ReadTimeout", since=when("2d"))),
        Case("events stats (--since 24h)", lambda session: store_stats(session, when("24h"))),
        Case("events stats --since 30d", lambda session: store_stats(session, when("30d"))),
        Case("events purge --retention: count", lambda session: purge_count(
            session, purge_conditions(now, 30 * DAY_S, 90 * DAY_S))),
        Case("events purge --retention: a batch (select, delete)", purging(30, 90)),
        Case("events purge --older-than 100d: last batch (none left)", purging(100, 100)),
        Case("sweep: release expired leases", lambda session: session.execute(release_expired_leases(now)).rowcount),
        Case("sweep: broker forgot (all pending unmarked)", lambda session: session.execute(forget_enqueued()).rowcount),
        Case("sweep: overdue deliveries handed back", lambda session: session.execute(forget_overdue(now)).rowcount),
        Case("dispatch: deliveries out per destination and lane",
             lambda session: session.connection().exec_driver_sql(count_sql, count_params).all()),
        Case("dispatch: unpublished deliveries (FOR UPDATE SKIP LOCKED)",
             lambda session: session.connection().exec_driver_sql(dispatch_sql, dispatch_params).all()),
    ]


def command_cases() -> list[tuple[str, list[str]]]:
    return [
        ("relay events list --json", ["events", "list", "--json"]),
        ("relay events list --status failed --json", ["events", "list", "--status", "failed", "--json"]),
        ("relay events list --until 30d --json", ["events", "list", "--until", "30d", "--json"]),
        ("relay events list --error 'no such error' --json", ["events", "list", "--error", "no such error", "--json"]),
        ("relay events stats --json", ["events", "stats", "--json"]),
        ("relay events purge --retention --dry-run", ["events", "purge", "--retention", "--dry-run"]),
    ]


def timed(function: Callable[[], object], runs: int) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return times


def in_rolled_back_session(db: Database, run: Callable[[Session], object]) -> Callable[[], object]:
    def once():
        with db.session() as session:
            try:
                return run(session)
            finally:
                session.rollback()
    return once


def explain(db: Database, statements: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    """(SQL with its values, plan) of each statement, run under EXPLAIN and rolled back."""
    out = []
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        for statement, parameters in statements:
            sql = psycopg.ClientCursor(raw).mogrify(statement, parameters)
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).scalars().all()
            out.append((sql, "\n".join(plan)))
        conn.rollback()
    return out


def shell(command: str) -> str:
    return subprocess.run(command, shell=True, capture_output=True, text=True).stdout.rstrip()


def environment(db: Database) -> dict:
    with db.engine.connect() as conn:
        settings = dict(conn.execute(sa.text(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(:names) ORDER BY name"),
            {"names": ["shared_buffers", "work_mem", "effective_cache_size", "random_page_cost",
                       "max_parallel_workers_per_gather", "jit"]}).all())
        return {
            "postgres": conn.scalar(sa.text("SELECT version()")),
            "settings": settings,
            "revision": conn.scalar(sa.text("SELECT version_num FROM alembic_version")),
            "counts": conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries), "
                "(SELECT count(*) FROM event_subjects), pg_size_pretty(pg_database_size(current_database()))")).one(),
            "indexes": conn.execute(sa.text(
                "SELECT tablename, indexdef FROM pg_indexes WHERE tablename IN ('events', 'deliveries', 'event_subjects') "
                "ORDER BY tablename, indexname")).all(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--only", help="only the cases whose name contains this")
    parser.add_argument("--compare", help="an earlier RESULTS.md whose figures the table shows beside")
    args = parser.parse_args()
    load_before = shell("cat /proc/loadavg | cut -d' ' -f1-3")

    db = Database(args.url)
    capture = Capture(db.engine)
    rows, plans = [], []
    for case in cases(db):
        if args.only and args.only not in case.name:
            continue
        once = in_rolled_back_session(db, case.run)
        times = timed(once, args.runs)
        capture.on, capture.statements = True, []
        once()
        capture.on = False
        rows.append((case.name, statistics.median(times), max(times)))
        plans.append((case.name, explain(db, capture.statements)))
        print(f"{case.name:<72} {rows[-1][1]:>8.1f} {rows[-1][2]:>8.1f}  {'yes' if rows[-1][2] < LIMIT_MS else 'NO'}",
              flush=True)

    with tempfile.TemporaryDirectory() as instance:
        app = create_base_app({"DATABASE_URL": args.url, "RELAY_INSTANCE_PATH": instance})
        runner = app.test_cli_runner()
        for name, argv in command_cases():
            if args.only and args.only not in name:
                continue

            def invoke():
                result = runner.invoke(relay_main, argv, catch_exceptions=False)
                assert result.exit_code == 0, result.output

            times = timed(invoke, args.runs)
            rows.append((name, statistics.median(times), max(times)))
            print(f"{name:<72} {rows[-1][1]:>8.1f} {rows[-1][2]:>8.1f}  {'yes' if rows[-1][2] < LIMIT_MS else 'NO'}",
                  flush=True)
        Runtime.of(app).close()

    env = environment(db) | {"load": (load_before, shell("cat /proc/loadavg | cut -d' ' -f1-3"))}
    db.dispose()
    Path(args.out).write_text(report(args, rows, plans, env))
    print(f"wrote {args.out}")


_LONG_SQL_LIST = re.compile(r"(\d+::INTEGER, ){8,}\d+::INTEGER")
_LONG_ARRAY = re.compile(r"\{(\d+,){8,}\d+\}")


def shorten(text: str) -> str:
    """Long lists of ids (a selectinload's, a purge batch's) as their first and last few."""
    def sql_list(match):
        items = match.group(0).split(", ")
        return ", ".join(items[:3]) + f", /* {len(items) - 6} more */ " + ", ".join(items[-3:])

    def array(match):
        items = match.group(0)[1:-1].split(",")
        return "{" + ",".join(items[:3]) + f",…{len(items) - 6} more…," + ",".join(items[-3:]) + "}"

    return _LONG_ARRAY.sub(array, _LONG_SQL_LIST.sub(sql_list, text))


def earlier_figures(path: str | None) -> dict[str, tuple[str, str]]:
    """(median, max) by case name from the table of an earlier RESULTS.md."""
    if not path:
        return {}
    figures = {}
    for line in Path(path).read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            figures[cells[0].strip("`")] = (cells[1], cells[2])
    return figures


def report(args, rows, plans, env) -> str:
    events, deliveries, subjects, size = env["counts"]
    command = "python -m bench.million.run" + "".join(
        f" {flag} {value}" for flag, value in (("--runs", args.runs), ("--only", args.only), ("--compare", args.compare),
                                               ("--out", args.out))
        if value is not None and (flag, value) not in (("--runs", 7), ("--out", str(HERE / "RESULTS.md"))))
    before = earlier_figures(args.compare)
    if before:
        header = ["| query | ms median | ms max | under 200 ms | before: ms median | before: ms max |",
                  "|---|---:|---:|---|---:|---:|"]
    else:
        header = ["| query | ms median | ms max | under 200 ms |", "|---|---:|---:|---|"]

    def row(name, median, worst):
        cells = [f"`{name}`", f"{median:.1f}", f"{worst:.1f}", "yes" if worst < LIMIT_MS else "**no**"]
        if before:
            cells += list(before.get(name, ("-", "-")))
        return "| " + " | ".join(cells) + " |"

    cpu = shell("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    lines = [
        "# A million events: Relay's store queries",
        "",
        f"Measured on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        ". .venv/bin/activate",
        "python -m bench.million.generate   # recreates relay_bench_million",
        command,
        "```",
        "",
        f"- machine: {shell('nproc')} cores ({cpu}), "
        f"Python {platform.python_version()}",
        "- memory (`free -g`):",
        "",
        "```",
        shell("free -g"),
        "```",
        "",
        f"- {env['postgres']}",
        "- settings: " + ", ".join(f"{k} {v}" for k, v in env["settings"].items())
        + " (the server's defaults)",
        f"- schema at Alembic revision {env['revision']}; {events:,} events, {deliveries:,} deliveries, "
        f"{subjects:,} event_subjects, {size} on disk",
        f"- each case: one warm-up run, then {args.runs} runs; ms from the first statement sent to the last row "
        "read, through SQLAlchemy and psycopg on the same machine; writes rolled back. Other work may have shared "
        "the two cores: load average {} before, {} after.".format(*env["load"]),
        "",
        *header,
        *(row(name, median, worst) for name, median, worst in rows),
        "",
        *([f"The before columns are `{args.compare}`'s (its header says how they were measured).", ""]
          if before else []),
        "Indexes:",
        "",
        "```",
        *(definition for _, definition in env["indexes"]),
        "```",
        "",
        "## Plans",
        "",
        "EXPLAIN (ANALYZE, BUFFERS) of every statement each case sent (one more run after the timed ones); "
        "long lists of ids are shortened here.",
        "",
    ]
    for name, statements in plans:
        lines += [f"### `{name}`", ""]
        for sql, plan in statements:
            lines += ["```sql", shorten(sql.strip()), "```", "", "```", shorten(plan), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
