"""`relay dev`: the whole of Relay on one machine with nothing installed but Python.

Web app (in this process), one Celery worker with the sweep embedded (a child process), the
vendor sandbox (a thread) for every vendor that has no credentials in the environment, and,
without REDIS_URL, a Redis served from this process on loopback (fakeredis over TCP): broker,
throttle, breaker, locks and metrics are shared by the web app, the worker and any `relay`
command run with instance/dev.env, as they are through REDIS_URL in production. It lives in
memory: a restart begins with an empty Redis, which the sweep recovers from as after a Redis
restart. Without DATABASE_URL the store is a SQLite file under instance/; the sandbox keeps its
records in instance/sandbox-state.json, so a restart keeps both.

The console is on: without RELAY_CONSOLE_SECRET_KEY, dev makes a random key (in instance/dev.env),
and in its own SQLite store an operator account when there is none (dev@relay.localhost, a
random password kept in instance/dev-console.json); the banner prints the address and the
credentials.

The terminal shows one line per webhook and per delivery outcome (web.cli.live); every log line
goes to instance/dev.log (this process: web app, sandbox) and instance/dev-worker.log (the
worker, beat and Celery: its banner, then JSON lines). Ctrl-C stops them all.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from relay.config import DEV_WEBHOOK_TOKEN
from relay.destinations import PLUGINS_VARIABLE, Registry, SandboxMount
from relay.runtime import Runtime
from sandbox import FIXTURES, SandboxSettings
from web.cli.live import LiveLines, pump

SAMPLE = FIXTURES / "new_referral.json"
WEB_LOG, WORKER_LOG = "dev.log", "dev-worker.log"
SANDBOX_STATE, SETTINGS_FILE = "sandbox-state.json", "dev.env"
CONSOLE_ACCOUNT_FILE = "dev-console.json"
DEV_OPERATOR = "dev@relay.localhost"
HOST = "127.0.0.1"
# SparkLoop's API in the sandbox (the destinations declare their own mounts: relay.destinations).
SPARKLOOP_MOUNT = SandboxMount(
    "SPARKLOOP_API_KEY", SandboxSettings.sparkloop_api_key, "SPARKLOOP_API_URL", "/sparkloop/v2"
)


class DevUsageError(click.ClickException):
    """Bad use of `relay dev` (a port taken, --fresh without a way to ask): exit code 2."""

    exit_code = 2


@dataclass
class DevPlan:
    """What this run serves, decided before anything is bound, written or printed."""

    env: dict
    ports: dict[str, int]  # option -> port, for what this run binds
    sandboxed: dict[str, str] = field(default_factory=dict)  # variables that point Relay at the sandbox
    redis_url: str | None = None  # the Redis this process serves, if any
    dev_settings: dict[str, str] = field(default_factory=dict)  # what dev chose, for dev.env


DEV_SHUTDOWN_GRACE = "3s"


def plan_dev(port: int, sandbox_port: int, redis_port: int, environ: dict | None = None) -> DevPlan:
    env = dict(os.environ if environ is None else environ)
    plan = DevPlan(env=env, ports={"--port": port})
    if not env.get("SPARKLOOP_WEBHOOK_TOKEN"):
        plan.dev_settings["SPARKLOOP_WEBHOOK_TOKEN"] = DEV_WEBHOOK_TOKEN  # not a secret: dev's own
    if not env.get("RELAY_CONSOLE_SECRET_KEY"):
        # A new one each run: dev's sessions live in its in-memory Redis, which a restart empties anyway.
        plan.dev_settings["RELAY_CONSOLE_SECRET_KEY"] = secrets.token_urlsafe(32)
    destinations = Registry.discover(env.get(PLUGINS_VARIABLE))
    mounts = [d.sandbox for d in destinations.values() if d.sandbox] + [SPARKLOOP_MOUNT]
    missing = {mount.credential_variable: mount for mount in mounts if not env.get(mount.credential_variable)}
    if missing:
        plan.ports["--sandbox-port"] = sandbox_port
        for key, mount in missing.items():
            plan.sandboxed |= {mount.url_variable: f"http://{HOST}:{sandbox_port}{mount.path}", key: mount.credential}
            plan.dev_settings |= {name: value for name, value in mount.settings.items() if not env.get(name)}
    if not env.get("REDIS_URL"):
        plan.ports["--redis-port"] = redis_port
        plan.redis_url = f"redis://{HOST}:{redis_port}/0"
        plan.dev_settings["REDIS_URL"] = plan.redis_url
    env.update(plan.sandboxed | plan.dev_settings)
    env.setdefault("LOG_FORMAT", "text")  # a terminal's reader, whatever stderr is
    # Ctrl-C answers within seconds, not production's 20: what the worker has not finished by
    # then is handed back, and the next `relay dev` delivers it.
    env.setdefault("RELAY_SHUTDOWN_GRACE", DEV_SHUTDOWN_GRACE)
    return plan


def run_dev(port: int, sandbox_port: int, redis_port: int, fresh: bool = False, yes: bool = False) -> None:
    from web import create_app

    plan = plan_dev(port, sandbox_port, redis_port)
    check_ports_free(plan.ports)  # before anything is written or printed: another `relay dev`?
    if fresh and plan.env.get("DATABASE_URL"):
        raise DevUsageError(
            "--fresh empties only relay dev's own SQLite store, and DATABASE_URL is set: "
            "empty that database yourself, or unset DATABASE_URL"
        )
    app = create_app(plan.env)
    instance = Path(app.instance_path)
    plan.env["RELAY_INSTANCE_PATH"] = app.instance_path
    if fresh:
        start_fresh(app, instance, yes)
    redis_server = sandbox = web = worker = None
    binding = "--port"
    # Put back when it returns: a process that goes on (a test's CliRunner) must not keep
    # ignoring Ctrl-C, nor pass that on to every process it starts.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            if plan.redis_url:
                binding, redis_server = "--redis-port", _serve_redis(redis_port)
            if plan.sandboxed:
                binding, sandbox = "--sandbox-port", _serve_sandbox(sandbox_port, instance)
            binding, web = "--port", _bind_web(port, app)
        except OSError:  # taken between the check and the bind
            raise DevUsageError(_taken_message(plan.ports, [binding])) from None
        live = _log_to_files(instance, _event_type_reader(app))
        with app.app_context():
            Runtime.of(app).db.upgrade()
        # Before the worker runs anything that could store new links.
        stale = stale_links(app, sandbox, plan.sandboxed) if sandbox is not None else None
        console = dev_console(app, plan.env, instance)
        worker = _start_worker(plan.env, instance, live)
        settings_file = _write_settings(plan, instance)
        _print_banner(port, plan, sandbox, settings_file, stale, fresh, console)
        # SIGTERM (e.g. from a process manager) ends the dev server like Ctrl-C does; and Ctrl-C
        # does even when started where SIGINT was ignored (a shell's background job).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        web.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if web is not None:
            web.server_close()
        if worker is not None:
            # A second Ctrl-C reaches the worker (Celery's cold shutdown) and does not cut this short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _stop(worker)
        _stop_servers(redis_server, sandbox)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if worker is not None:
            click.echo("relay dev stopped: web app, worker and sandbox")


def _interrupt(*_):
    raise KeyboardInterrupt


# --- ports ----------------------------------------------------------------------------------


def port_taken(port: int) -> bool:
    """Whether something listens on loopback `port`. SO_REUSEADDR, as the servers bind: a port
    the last run left in TIME_WAIT is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def check_ports_free(ports: dict[str, int]) -> None:
    taken = [option for option, port in ports.items() if port_taken(port)]
    if taken:
        raise DevUsageError(_taken_message(ports, taken))


def _taken_message(ports: dict[str, int], taken: list[str]) -> str:
    which = ", ".join(f"{ports[option]} ({option})" for option in taken) or "a port"
    options = " / ".join(taken) or "--port / --sandbox-port / --redis-port"
    return (
        f"port {which} already in use, perhaps by another `relay dev`: stop it, or choose "
        f"another with {options}. Nothing was started or written."
    )


# --- --fresh --------------------------------------------------------------------------------


def start_fresh(app, instance: Path, yes: bool) -> None:
    """Empty dev's SQLite store and the sandbox's saved records, after asking (or --yes)."""
    config = app.config["RELAY"]
    database = Path(config.database_url.removeprefix("sqlite:///"))
    state_file = instance / SANDBOX_STATE
    what = (
        f"relay dev --fresh deletes the store {database} (every event, delivery and subscriber link) "
        f"and the sandbox's records {state_file}."
    )
    if not yes:
        if not _interactive():
            raise DevUsageError(f"{what} It asks first, and there is no terminal to ask: add --yes")
        click.confirm(f"{what} Go on?", abort=True)
    Runtime.of(app).db.dispose()
    for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")), state_file):
        path.unlink(missing_ok=True)


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


# --- the servers ----------------------------------------------------------------------------


def _serve_redis(port: int):
    """A Redis for dev's processes, in this process's memory (fakeredis, Lua scripts included)."""
    import fakeredis

    server = fakeredis.TcpFakeServer((HOST, port))
    threading.Thread(target=server.serve_forever, name="relay-dev-redis", daemon=True).start()
    return server


def _serve_sandbox(port: int, instance: Path):
    from sandbox import SandboxSettings, serve_in_thread

    return serve_in_thread(HOST, port, settings=SandboxSettings(state_file=str(instance / SANDBOX_STATE)))


def _bind_web(port: int, app):
    from werkzeug.serving import make_server

    return make_server(HOST, port, app, threaded=True)


def _stop_servers(redis_server, sandbox) -> None:
    if sandbox is not None:
        sandbox.stop()  # saves its records
    if redis_server is not None:
        redis_server.shutdown()
        redis_server.server_close()


def _start_worker(env: dict, instance: Path, live: logging.Handler) -> subprocess.Popen:
    worker = subprocess.Popen(  # supervised, as the Procfile's worker: started again if it dies
        [
            sys.executable,
            "-m",
            "web.cli",
            "worker",
            "--banner",
            "--beat",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "--loglevel",
            "INFO",
            "--schedule",
            str(instance / "celerybeat-schedule"),
        ],
        # JSON, so that its delivery records can be read back for the terminal's lines.
        env=env | {"LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    # The pump's thread closes the file when the worker's output ends.
    pump(worker.stdout, open(instance / WORKER_LOG, "a", encoding="utf-8"), live)  # noqa: SIM115
    return worker


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def _log_to_files(instance: Path, event_type_of) -> logging.Handler:
    """This process's log lines to instance/dev.log instead of the terminal, which gets the
    live lines; returns their handler, for the worker's records too."""
    instance.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "relay", False):  # stderr
            # Open for the rest of the process: the handler writes to it until exit.
            handler.setStream(open(instance / WEB_LOG, "a", encoding="utf-8"))  # noqa: SIM115
    # A handler's lock: web threads and the worker's reader take turns.
    live = LiveLines(click.echo, event_type_of=event_type_of)
    root.addHandler(live)
    return live


def _event_type_reader(app):
    """The stored type of an event: the webhook's log record names only the types Relay knows
    (a label a sender cannot make up), `relay events list` the one stored."""
    from operations.dev import event_type

    runtime = Runtime.of(app)
    return lambda event_id: event_type(runtime, event_id)


# --- the console -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DevConsole:
    """How to sign in to the console, as the banner says it."""

    email: str | None = None
    password: str | None = None  # dev's own account's, when it still signs in with it
    made: bool = False  # made by this run
    note: str | None = None  # when there are no credentials to print: what to do instead


def dev_console(app, env: dict, instance: Path) -> DevConsole | None:
    """The console's credentials for the banner (None: the console is off). In dev's own SQLite
    store, an operator account is made when there is none, its random password kept beside the
    store (readable by its owner only); never in a store DATABASE_URL names."""
    from operations.accounts import authenticate
    from operations.audit import Actor
    from operations.dev import add_dev_operator

    runtime = Runtime.of(app)
    if not runtime.config.console_secret_key:
        return None
    if env.get("DATABASE_URL"):
        return DevConsole(note="sign in with an operator account of DATABASE_URL's store (`relay users add`)")
    saved = instance / CONSOLE_ACCOUNT_FILE
    password = secrets.token_urlsafe(12)
    made = add_dev_operator(runtime, DEV_OPERATOR, password, actor=Actor.cli(runtime.config.operator))
    if made is not None:
        saved.touch(mode=0o600)
        saved.chmod(0o600)
        saved.write_text(json.dumps({"email": made.email, "password": password}) + "\n")
        return DevConsole(made.email, password, made=True)
    kept = _saved_credentials(saved)
    if kept is not None and authenticate(runtime, *kept) is not None:
        return DevConsole(*kept)
    return DevConsole(note="sign in with an operator account of this store (`relay users list` names them)")


def _saved_credentials(path: Path) -> tuple[str, str] | None:
    try:
        kept = json.loads(path.read_text())
        return str(kept["email"]), str(kept["password"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def console_lines(url: str, console: DevConsole | None) -> list[str]:
    if console is None:
        return []
    address = f"Console: {url}/console/"
    if console.password is None:
        return [f"{address}  ({console.note})"]
    kept = f"made now, kept in {CONSOLE_ACCOUNT_FILE}" if console.made else f"from {CONSOLE_ACCOUNT_FILE}"
    return [f"{address}  sign in as {console.email}, password {console.password}  ({kept})"]


# --- what the banner says -------------------------------------------------------------------


@dataclass(frozen=True)
class StaleLinks:
    lost: dict[str, int]  # what a destination remembers (as it names it) -> ids the sandbox lost


def stale_links(app, sandbox, sandboxed: Container[str] | None = None) -> StaleLinks | None:
    """Ids the destinations remember (workers.identity) of records the sandbox does not know (its
    records were reset or deleted since), for the destinations it imitates (those whose
    credential variable is in `sandboxed`; all when None), or None when there are none."""
    from operations.dev import remembered_ids

    runtime = Runtime.of(app)
    lost = {}
    for destination in runtime.destinations.values():
        mount = destination.sandbox
        if mount is None or (sandboxed is not None and mount.credential_variable not in sandboxed):
            continue
        for key, records in mount.records.items():
            with sandbox.state.lock:
                known = set(getattr(sandbox.state, records))
            count = len(remembered_ids(runtime, destination.name, key) - known)
            if count:
                lost[destination.remembers.get(key, f"{destination.name} {key}")] = count
    return StaleLinks(lost) if lost else None


def stale_note(stale: StaleLinks) -> str:
    listed = ", ".join(f"{name}s: {count}" for name, count in stale.lost.items())
    return (
        f"Note: the store remembers vendor ids the sandbox does not know ({listed}): its records were "
        "reset or deleted since. `relay dev --fresh` empties the store and the sandbox together."
    )


def _write_settings(plan: DevPlan, instance: Path) -> Path:
    """The settings another terminal needs to reach this run (`. instance/dev.env`): the
    sandbox's, dev's own Redis, webhook token and console key. Each is dev's own; the console's
    key signs sessions, so the file is its owner's to read only."""
    path = instance / SETTINGS_FILE
    variables = plan.sandboxed | plan.dev_settings | {"RELAY_INSTANCE_PATH": str(instance)}
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"export {name}={value}\n" for name, value in variables.items()))
    return path


def _print_banner(
    port: int,
    plan: DevPlan,
    sandbox,
    settings_file: Path,
    stale: StaleLinks | None,
    fresh: bool,
    console: DevConsole | None = None,
) -> None:
    env = plan.env
    url = f"http://{HOST}:{port}"
    token = env["SPARKLOOP_WEBHOOK_TOKEN"]
    shown_token = token if token == DEV_WEBHOOK_TOKEN else "<your SPARKLOOP_WEBHOOK_TOKEN>"
    redis = f"Redis served by relay dev at {plan.redis_url} (in memory)" if plan.redis_url else "REDIS_URL"
    lines = [
        "",
        f"Relay is running at {url}  (webhook: {url}/webhooks/sparkloop)",
        f"SparkLoop-Token: {shown_token}",
        f"Store: {'DATABASE_URL' if env.get('DATABASE_URL') else 'SQLite under instance/'};"
        f" broker, throttle, breaker and metrics: {redis}",
        *console_lines(url, console),
    ]
    if sandbox is not None:
        lines.append(
            f"Vendor sandbox: {sandbox.url}  (state: {sandbox.url}/_sandbox/state;"
            f" kept in {Path(env['RELAY_INSTANCE_PATH']) / SANDBOX_STATE})"
        )
    if stale is not None:
        lines.append(stale_note(stale))
    if fresh:
        lines.append("Started fresh: the store and the sandbox were emptied.")
    lines += [
        "",
        "Post a documented SparkLoop payload:",
        f"  curl -sS -X POST {url}/webhooks/sparkloop -H 'SparkLoop-Token: {shown_token}' "
        f"-H 'Content-Type: application/json' --data @{SAMPLE} -w '%{{http_code}}\\n'",
        "Then watch it: relay events list --follow  (in another terminal)",
        f"Other relay commands (doctor, events stats, backfill) reach this run after: . {settings_file}",
    ]
    if "SPARKLOOP_API_KEY" in plan.sandboxed:
        seed = "relay dev seed-subscribers 20" + (
            f" --sandbox-port {sandbox.server.server_port}" if sandbox.server.server_port != 8025 else ""
        )
        lines.append(f"  e.g. {seed}  then  relay backfill --since 1d")
    lines += [
        f"Logs: {Path(env['RELAY_INSTANCE_PATH']) / WEB_LOG} (web, sandbox), {WORKER_LOG} beside it"
        " (worker, Celery).  Ctrl-C stops everything.",
        "",
    ]
    click.echo("\n".join(lines))


# --- relay dev seed-subscribers ---------------------------------------------------------------


def seed_subscribers(count: int, sandbox_port: int) -> int:
    """Add `count` made-up subscribers to the running sandbox's SparkLoop list (created over
    the last 12 hours, every third one referred by an earlier one); returns how many it holds."""
    import httpx

    batch = secrets.token_hex(3)  # a run of its own: emails no earlier run took
    now = datetime.now(UTC)
    spacing = timedelta(hours=12) / count
    subscribers: list[dict[str, str]] = []
    for n in range(count):
        subscriber = {
            "email": f"seed-{batch}-{n + 1}@example.com",
            "ref_code": f"{batch}{n + 1:04d}",
            "created_at": (now - spacing * (count - n)).isoformat(),
        }
        if n % 3 == 2:
            subscriber["referrer_code"] = subscribers[n - 1]["ref_code"]
        subscribers.append(subscriber)
    base = f"http://{HOST}:{sandbox_port}/_sandbox"
    try:
        answer = httpx.post(f"{base}/sparkloop/subscribers", json={"subscribers": subscribers}, timeout=10)
        if answer.status_code != 201:
            raise click.ClickException(
                f"the sandbox refused the subscribers ({answer.status_code}): {answer.json().get('error', '')}"
            )
        held = httpx.get(f"{base}/state", timeout=10).json()["sparkloop"]["subscribers"]
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"no sandbox answers at {base} ({type(exc).__name__}): is `relay dev` running, with this --sandbox-port?"
        ) from None
    return len(held)
