"""A `relay` command's report goes to stdout and its log lines to stderr; on a terminal the
operator reads the report, without the INFO lines that would land in it (warnings still show).
Real processes: Click's runner swaps sys.stdout and sys.stderr, a terminal it cannot be."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from testbed.apps import TOKEN, fresh_services, make_app
from testbed.backfill import seed
from relay.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
FORGET = ["subscribers", "forget", "nobody@example.com", "--yes"]


def relay(env: dict[str, str], args: list[str], stderr_on_a_terminal: bool) -> tuple[str, str]:
    """Run `relay ARGS`: its stdout (a pipe), and its stderr (a pipe, or what its terminal showed)."""
    if not stderr_on_a_terminal:
        done = subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=60, text=True)
        assert done.returncode == 0, (done.stdout, done.stderr)
        return done.stdout, done.stderr
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=terminal, stdin=subprocess.DEVNULL, timeout=60, text=True)
        os.close(terminal)
        terminal = None
        shown = b""
        for _ in range(1000):  # bounded: the command has ended, what it wrote is buffered
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other end is closed and all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal is not None:
            os.close(terminal)
        os.close(controller)
    assert done.returncode == 0, (done.stdout, shown)
    return done.stdout, shown.decode()


def migrated(env: dict[str, str]) -> dict[str, str]:
    Runtime.of(make_app(env)).close()
    return {"PATH": os.environ.get("PATH", ""), "LOG_FORMAT": "text", **env}


def test_forget_on_a_terminal_shows_its_report_without_its_log_line(tmp_path):
    env = migrated({"SPARKLOOP_WEBHOOK_TOKEN": TOKEN, "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
                    "RELAY_INSTANCE_PATH": str(tmp_path / "instance")})

    report, terminal = relay(env, FORGET, stderr_on_a_terminal=True)
    assert report.startswith("Erasure request person-") and "INFO" not in report
    assert "INFO" not in terminal and "erasure request" not in terminal, terminal

    # Off a terminal (a scheduler, a log collector), the record is there, on stderr only.
    piped, logged = relay(env, FORGET, stderr_on_a_terminal=False)
    assert piped == report
    assert "INFO relay.erasure: erasure request person-" in logged and "done:" in logged


def test_backfill_on_a_terminal_shows_its_report_without_its_log_line(redis_url, sandbox, tmp_path):
    env = migrated(fresh_services(f"sqlite:///{tmp_path / 'relay.sqlite3'}", redis_url, sandbox, tmp_path / "instance"))
    seed(sandbox, 1, 2)

    report, terminal = relay(env, ["backfill", "--since", "1d", "--dry-run"], stderr_on_a_terminal=True)
    lines = report.splitlines()
    assert lines[0].startswith("Backfilling") and lines[-1].startswith("Done: 1 page read, 2 subscribers seen")
    assert "backfill dry run" not in terminal and "INFO" not in terminal, terminal

    piped, logged = relay(env, ["backfill", "--since", "1d", "--dry-run"], stderr_on_a_terminal=False)
    assert piped.splitlines()[1:] == lines[1:]  # the first names the moment --since 1d meant
    assert "INFO relay.backfill: backfill dry run: 1 page read" in logged
