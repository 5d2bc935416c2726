"""Keeping one command running: `relay worker`'s supervisor, which starts its Celery worker
again at once when it dies.

Celery's consumer can die while reconnecting to a Redis that restarted: kombu 5.x, closing the
lost connection with messages still unacknowledged (ETA tasks, running tasks), fails with
`AttributeError: 'NoneType' object has no attribute 'hostname'`, an "Unrecoverable error" that
ends the worker; and an OOM kill ends it too. A PaaS restarts a crashed dyno only after a
delay, so the worker's dyno keeps the worker running itself. What the dead worker held is not
lost: leases, the sweep and idempotent steps bring it back (workers.lease, workers.sweep).

Hand-written rather than supervisord or circus: a dyno runs one command, and all it needs is
a loop that starts one child again, forwards SIGTERM and SIGINT, and gives up (so that the
platform shows the crash) when the child cannot even stay up. `relay worker` replaces itself
with `python -m relay.supervisor COMMAND...`: a process that imports only this module and
logging holds about 30 MiB where the `relay` command, which imports the whole app, held 95
(bench/footprint.py), for the dyno's whole life.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

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


def main(argv: list[str]) -> int:
    configure_logging(log_format())
    return supervise(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
