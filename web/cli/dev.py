"""`relay dev`: the whole of Relay on one machine with nothing installed but Python.

Web app (in this process), one Celery worker with the sweep embedded (a child process), and the
vendor sandbox (a thread) for every vendor that has no credentials in the environment. With no
REDIS_URL/DATABASE_URL set, the broker is a folder and the store a SQLite file under instance/.

The terminal shows one line per webhook and per delivery outcome (web.cli.live); every log line
goes to instance/dev.log (this process: web app, sandbox) and instance/dev-worker.log (the
worker, beat and Celery: its banner, then JSON lines). Ctrl-C stops them all.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from relay.config import DEV_WEBHOOK_TOKEN
from sandbox import FIXTURES
from web.cli.live import LiveLines, pump

SAMPLE = FIXTURES / "new_referral.json"
WEB_LOG, WORKER_LOG = "dev.log", "dev-worker.log"


def run_dev(port: int, sandbox_port: int) -> None:
    from werkzeug.serving import run_simple

    from web import create_app

    env = dict(os.environ)
    env.setdefault("SPARKLOOP_WEBHOOK_TOKEN", DEV_WEBHOOK_TOKEN)
    env.setdefault("LOG_FORMAT", "text")  # a terminal's reader, whatever stderr is
    sandbox, sandboxed = _start_sandbox_if_needed(env, sandbox_port)
    app = create_app(env)
    env["RELAY_INSTANCE_PATH"] = app.instance_path
    live = _log_to_files(Path(app.instance_path))
    with app.app_context():
        app.extensions["relay.db"].upgrade()

    worker = subprocess.Popen(  # supervised, as the Procfile's worker: started again if it dies
        [sys.executable, "-m", "web.cli", "worker", "--banner", "--beat",
         "--pool", "threads", "--concurrency", "4", "--loglevel", "INFO",
         "--schedule", str(Path(app.instance_path) / "celerybeat-schedule")],
        # JSON, so that its delivery records can be read back for the terminal's lines.
        env=env | {"LOG_FORMAT": "json"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace",
    )
    pump(worker.stdout, open(Path(app.instance_path) / WORKER_LOG, "a", encoding="utf-8"), live)
    _print_banner(port, env, sandbox, sandboxed)
    # SIGTERM (e.g. from a process manager) ends the dev server like Ctrl-C does; and Ctrl-C
    # does even when started where SIGINT was ignored (a shell's background job).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        run_simple("127.0.0.1", port, app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C reaches the worker (Celery's cold shutdown) and does not cut this short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(worker)
        if sandbox is not None:
            sandbox.stop()
        click.echo("relay dev stopped: web app, worker and sandbox")


def _interrupt(*_):
    raise KeyboardInterrupt


def _log_to_files(instance: Path) -> logging.Handler:
    """This process's log lines to instance/dev.log instead of the terminal, which gets the
    live lines; returns their handler, for the worker's records too."""
    instance.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "relay", False):  # relay.observability's: stderr
            handler.setStream(open(instance / WEB_LOG, "a", encoding="utf-8"))
    live = LiveLines(click.echo)  # a handler's lock: web threads and the worker's reader take turns
    root.addHandler(live)
    return live


def _start_sandbox_if_needed(env: dict, sandbox_port: int):
    """Serve every vendor without credentials from the sandbox; return it and the variables
    that point Relay at it (None, {} when every vendor is real)."""
    from sandbox import SandboxSettings, serve_in_thread

    settings = SandboxSettings()
    wanted = {
        "SPRIG_API_KEY": ("SPRIG_API_URL", "sprig_url", settings.sprig_api_key),
        "SPRUCE_API_TOKEN": ("SPRUCE_API_URL", "spruce_url", settings.spruce_api_token),
        "SPARKLOOP_API_KEY": ("SPARKLOOP_API_URL", "sparkloop_url", settings.sparkloop_api_key),
    }
    wanted = {key: how for key, how in wanted.items() if not env.get(key)}
    if not wanted:
        return None, {}
    sandbox = serve_in_thread("127.0.0.1", sandbox_port, settings=settings)
    sandboxed = {}
    for key, (url_variable, url_attribute, credential) in wanted.items():
        sandboxed |= {url_variable: getattr(sandbox, url_attribute), key: credential}
    env.update(sandboxed)
    return sandbox, sandboxed


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def _print_banner(port: int, env: dict, sandbox, sandboxed: dict) -> None:
    url = f"http://127.0.0.1:{port}"
    token = env["SPARKLOOP_WEBHOOK_TOKEN"]
    shown_token = token if token == DEV_WEBHOOK_TOKEN else "<your SPARKLOOP_WEBHOOK_TOKEN>"
    lines = [
        "",
        f"Relay is running at {url}  (webhook: {url}/webhooks/sparkloop)",
        f"SparkLoop-Token: {shown_token}",
        f"Store: {'DATABASE_URL' if env.get('DATABASE_URL') else 'SQLite under instance/'};"
        f" broker: {'REDIS_URL' if env.get('REDIS_URL') else 'embedded (instance/broker)'}",
    ]
    if sandbox is not None:
        lines.append(f"Vendor sandbox: {sandbox.url}  (state: {sandbox.url}/_sandbox/state)")
    lines += [
        "",
        "Post a documented SparkLoop payload:",
        f"  curl -sS -X POST {url}/webhooks/sparkloop -H 'SparkLoop-Token: {shown_token}' "
        f"-H 'Content-Type: application/json' --data @{SAMPLE} -w '%{{http_code}}\\n'",
        "Then watch it: relay events list --follow  (in another terminal)",
        f"Logs: {Path(env['RELAY_INSTANCE_PATH']) / WEB_LOG} (web, sandbox), {WORKER_LOG} beside it"
        " (worker, Celery).  Ctrl-C stops everything.",
        "",
    ]
    if sandbox is not None:
        lines += [
            "Other relay commands that talk to vendors (backfill, stats) need the sandbox's",
            f"settings: . {_write_sandbox_env(env, sandboxed)}",
            f"  then, after seeding POST {sandbox.url}/_sandbox/sparkloop/subscribers:",
            "  relay backfill --since 1d",
            "",
        ]
    click.echo("\n".join(lines))


def _write_sandbox_env(env: dict, sandboxed: dict) -> Path:
    """The sandbox's (non-secret) settings as a shell file, for `relay` commands run in another
    terminal."""
    path = Path(env["RELAY_INSTANCE_PATH"]) / "dev.env"
    variables = sandboxed | {"RELAY_INSTANCE_PATH": env["RELAY_INSTANCE_PATH"]}
    path.write_text("".join(f"export {name}={value}\n" for name, value in variables.items()))
    return path
