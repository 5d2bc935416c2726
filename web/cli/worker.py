"""`relay worker [celery options]`: a Celery worker that is started again at once when it dies.

Celery's consumer can die while reconnecting to a Redis that restarted: kombu 5.x, closing the
lost connection with messages still unacknowledged (ETA tasks, running tasks), fails with
`AttributeError: 'NoneType' object has no attribute 'hostname'`, an "Unrecoverable error" that
ends the worker; and an OOM kill ends it too. A PaaS restarts a crashed dyno only after a
delay, so this command keeps the worker running itself. What the dead worker held is not lost:
leases, the sweep and idempotent steps bring it back (workers.lease, workers.sweep).

Hand-written rather than supervisord or circus: a dyno runs one command, and all it needs is
a loop that starts one child again, forwards SIGTERM and SIGINT, and gives up (so that the
platform shows the crash) when the child cannot even stay up.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import click

from relay.config import log_format
from relay.observability import configure_logging

log = logging.getLogger("relay.worker")

RESTART_DELAYS_S = (1, 2, 4, 8, 15, 30)
QUICK_DEATH_S = 10.0  # a child that dies sooner did not really start
GIVE_UP_AFTER = 5  # quick deaths in a row: a configuration error, not a hiccup


def supervise(command: list[str], sleep=time.sleep, env: dict[str, str] | None = None) -> int:
    """Run `command` (in `env`) until asked to stop; start it again whenever it exits by itself.
    Returns the exit code to leave with."""
    child: subprocess.Popen | None = None
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    quick_deaths = 0
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen(command, env=env)
            code = child.wait()
            if stopping:
                return code
            ran_s = time.monotonic() - started
            quick_deaths = quick_deaths + 1 if ran_s < QUICK_DEATH_S else 0
            if quick_deaths >= GIVE_UP_AFTER:
                log.error(
                    "worker exited %d times in a row within %.0f s of starting (last code %s): giving up",
                    quick_deaths,
                    QUICK_DEATH_S,
                    code,
                )
                return code or 1
            delay = RESTART_DELAYS_S[min(quick_deaths, len(RESTART_DELAYS_S) - 1)]
            log.warning(
                "worker exited with code %s after %.0f s; starting it again in %s s",
                code,
                ran_s,
                delay,
                extra={"exit_code": code},
            )
            sleep(delay)
            if stopping:
                return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    configure_logging(style)
    quiet = ["--quiet"] if style == "json" and not banner else []  # Celery's banner is no log line
    # SIGTERM (a deploy) is Celery's cold shutdown, which begins with the soft one: tasks under
    # way get RELAY_SHUTDOWN_GRACE to finish, the rest are handed back. Celery's own SIGTERM, a
    # warm shutdown, would wait for them until the platform's SIGKILL.
    env = {**os.environ, "REMAP_SIGTERM": "SIGQUIT"}
    raise SystemExit(
        supervise([sys.executable, "-m", "celery", "-A", "workers", *quiet, "worker", *celery_options], env=env)
    )
