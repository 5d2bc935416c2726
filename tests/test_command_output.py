"""A `relay` command's report goes to stdout and its log lines to stderr, never into the report:
through Click's runner (stdout and stderr apart), and as a process whose stderr is a terminal."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import TOKEN, make_app
from tests.test_backfill import seed
from web.cli import main

ROOT = Path(__file__).resolve().parents[1]
FORGET = ["subscribers", "forget", "nobody@example.com", "--yes"]


def invoke(app, *args: str):
    result = app.test_cli_runner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_forget_reports_on_stdout_and_logs_its_record_on_stderr(app):
    result = invoke(app, *FORGET)

    assert result.stdout.startswith("Erasure request person-")
    assert "done:" not in result.stdout and "relay.erasure" not in result.stdout
    assert "erasure request person-" in result.stderr and "done:" in result.stderr


def test_backfill_reports_on_stdout_and_logs_its_record_on_stderr(app, sandbox):
    seed(sandbox, 1, 2)
    result = invoke(app, "backfill", "--since", "24h")

    lines = result.stdout.splitlines()
    assert lines[0].startswith("Backfilling") and lines[-1].startswith("Done: 1 page read")
    assert "relay.backfill" not in result.stdout
    assert "backfill finished" in result.stderr


def run_with_stderr_on_a_terminal(env: dict[str, str], args: list[str]) -> tuple[str, str]:
    """The command's stdout (a pipe) and what its terminal (stderr) showed."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=terminal, stdin=subprocess.DEVNULL, timeout=60, text=True)
        os.close(terminal)
        terminal = None
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal is not None:
            os.close(terminal)
        os.close(controller)
    assert process.returncode == 0, (process.stdout, shown)
    return process.stdout, shown.decode()


def test_on_a_terminal_a_command_shows_its_report_without_its_info_lines(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "SPARKLOOP_WEBHOOK_TOKEN": TOKEN, "LOG_FORMAT": "text",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}", "RELAY_INSTANCE_PATH": str(tmp_path / "instance")}
    make_app(env).extensions["relay.db"].dispose()  # migrated

    stdout, terminal = run_with_stderr_on_a_terminal(env, FORGET)

    assert stdout.startswith("Erasure request person-")
    assert "INFO" not in terminal and "erasure request" not in terminal, terminal
    # Not on a terminal, the same line reaches stderr: a scheduler's or collector's log has it.
    piped = subprocess.run([sys.executable, "-m", "web.cli", *FORGET], cwd=ROOT, env=env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60, text=True)
    assert "INFO relay.erasure: erasure request person-" in piped.stderr
    assert piped.stdout == stdout
