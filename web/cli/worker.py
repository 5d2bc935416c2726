"""`relay worker [celery options]`: a Celery worker that is started again at once when it dies
(relay.supervisor says why, and how)."""

from __future__ import annotations

import os
import sys

import click

from relay.config import log_format


@click.command("worker", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--banner",
    is_flag=True,
    help="Print Celery's start-up banner also with JSON logs (relay dev keeps it in its log file).",
)
@click.argument("celery_options", nargs=-1, type=click.UNPROCESSED)
def worker_command(banner: bool, celery_options: tuple[str, ...]):
    """Run a Celery worker (CELERY_OPTIONS go to `celery worker`, e.g. --concurrency 4) and
    start it again at once whenever it dies. Gives up, with the worker's exit code, after 5
    deaths in a row each within 10 s of starting."""
    style = log_format()
    quiet = ["--quiet"] if style == "json" and not banner else []  # Celery's banner is no log line
    # SIGTERM (a deploy) is Celery's cold shutdown, which begins with the soft one: tasks under
    # way get RELAY_SHUTDOWN_GRACE to finish, the rest are handed back. Celery's own SIGTERM, a
    # warm shutdown, would wait for them until the platform's SIGKILL.
    env = {**os.environ, "REMAP_SIGTERM": "SIGQUIT"}
    celery = [sys.executable, "-m", "celery", "-A", "workers", *quiet, "worker", *celery_options]
    # The same process (its pid, its signals) goes on as the supervisor, without the app's imports.
    os.execve(sys.executable, [sys.executable, "-m", "relay.supervisor", *celery], env)
