"""`relay dev`: the whole of Relay on one machine with nothing installed but Python.

Web app (in this process), one Celery worker with the sweep embedded (a child process), and the
vendor sandbox (a thread) for every vendor that has no credentials in the environment. With no
REDIS_URL/DATABASE_URL set, the broker is a folder and the store a SQLite file under instance/.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

DEV_TOKEN = "relay-dev-token"
SAMPLE = Path(__file__).resolve().parent.parent / "sandbox" / "fixtures" / "sparkloop" / "new_referral.json"


def run_dev(port: int, sandbox_port: int) -> None:
    from werkzeug.serving import run_simple

    from web import create_app

    env = dict(os.environ)
    env.setdefault("SPARKLOOP_WEBHOOK_TOKEN", DEV_TOKEN)
    sandbox = _start_sandbox_if_needed(env, sandbox_port)
    app = create_app(env)
    env["RELAY_INSTANCE_PATH"] = app.instance_path
    with app.app_context():
        app.extensions["relay.db"].upgrade()

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--beat",
         "--pool", "threads", "--concurrency", "4", "--loglevel", "INFO",
         "--schedule", str(Path(app.instance_path) / "celerybeat-schedule")],
        env=env,
    )
    _print_banner(port, env, sandbox)
    # SIGTERM (e.g. from a process manager) ends the dev server like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_simple("127.0.0.1", port, app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(worker)
        if sandbox is not None:
            sandbox.stop()


def _interrupt(*_):
    raise KeyboardInterrupt


def _start_sandbox_if_needed(env: dict, sandbox_port: int):
    need_sprig = not env.get("SPRIG_API_KEY")
    need_spruce = not env.get("SPRUCE_API_TOKEN")
    need_sparkloop = not env.get("SPARKLOOP_API_KEY")
    if not (need_sprig or need_spruce or need_sparkloop):
        return None
    from sandbox import SandboxSettings, serve_in_thread

    settings = SandboxSettings()
    sandbox = serve_in_thread("127.0.0.1", sandbox_port, settings=settings)
    if need_sprig:
        env.update(SPRIG_API_URL=sandbox.sprig_url, SPRIG_API_KEY=settings.sprig_api_key)
    if need_spruce:
        env.update(SPRUCE_API_URL=sandbox.spruce_url, SPRUCE_API_TOKEN=settings.spruce_api_token)
    if need_sparkloop:
        env.update(SPARKLOOP_API_URL=sandbox.sparkloop_url, SPARKLOOP_API_KEY=settings.sparkloop_api_key)
    return sandbox


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def _print_banner(port: int, env: dict, sandbox) -> None:
    url = f"http://127.0.0.1:{port}"
    token = env["SPARKLOOP_WEBHOOK_TOKEN"]
    shown_token = token if token == DEV_TOKEN else "<your SPARKLOOP_WEBHOOK_TOKEN>"
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
        "Then watch it: relay events list",
        "",
    ]
    if sandbox is not None and env.get("SPARKLOOP_API_URL") == sandbox.sparkloop_url:
        lines += [
            "Backfill from the sandbox's SparkLoop API (seed it: POST "
            f"{sandbox.url}/_sandbox/sparkloop/subscribers):",
            f"  SPARKLOOP_API_URL={env['SPARKLOOP_API_URL']} SPARKLOOP_API_KEY={env['SPARKLOOP_API_KEY']} "
            "relay backfill --since 1d",
            "",
        ]
    click.echo("\n".join(lines))
