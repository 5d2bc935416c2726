"""The processes of a drill: Relay's (workers, beat, gunicorn, each started as the Procfile
starts it and ended here, by its pid), a redis-server of its own, and a proxy in front of
PostgreSQL that can cut every connection as a restart does."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from relay.runtime import Runtime
from testbed.net import free_port
from testbed.waiting import wait_for
from web import create_app

REPO = Path(__file__).resolve().parents[2]
STOP_WITHIN_S = 8.0
PROCFILE = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line.strip())


class Drill:
    """One drill's Relay configuration, its web app (in this process) and its processes."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.processes: list[subprocess.Popen] = []
        self._app = None

    def app(self, **overrides: str):
        """The web side; processes started afterwards get the same configuration."""
        self.env = {**self.env, **overrides}
        self._app = create_app(self.env)
        return self._app

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start_worker(
        self, name: str, supervised: bool = False, as_procfile: bool = False, loglevel: str = "WARNING"
    ) -> subprocess.Popen:
        """A one-process worker (solo pool: a task runs in the main process, so a SIGKILL lands
        mid-delivery), or `as_procfile`: Celery's defaults, two pool processes. `supervised`:
        under `relay worker`, as the Procfile runs it."""
        options = ["--loglevel", loglevel, "-n", f"{name}@%h"]
        options += (
            ["--concurrency", "2"]
            if as_procfile
            else ["--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        )
        runner = ["-m", "web.cli", "worker"] if supervised else ["-m", "celery", "-A", "workers", "worker"]
        return self.start(name, [sys.executable, *runner, *options])

    def start_beat(self, name: str = "beat", as_procfile: bool = False) -> subprocess.Popen:
        """Beat with a file schedule, or `as_procfile`: as the Procfile's line runs it."""
        if as_procfile:
            command = PROCFILE["beat"].split()
            return self.start(name, [sys.executable, "-m", *command])
        return self.start(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(self.log_dir / f"{name}-schedule"),
            ],
        )

    def start_web(self, name: str, port: int) -> subprocess.Popen:
        """gunicorn as the Procfile runs it (gunicorn.conf.py), bound to loopback only."""
        process = self.start(
            name,
            [
                sys.executable,
                "-m",
                "gunicorn",
                "web:create_app()",
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
            ],
        )
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=30), self.logs()
        return process

    @staticmethod
    def worker_of(supervisor: subprocess.Popen) -> int | None:
        """The pid of the Celery worker a `relay worker` runs now."""
        try:
            children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL to the process and its children: a machine gone."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    def stop(self) -> None:
        """SIGTERM to every process, then SIGKILL to whatever still runs after STOP_WITHIN_S in
        all (a worker waiting out its shutdown grace in a slow vendor call): the drill's
        verdict is in by now, and graceful stops are what test_drill_restart.py checks."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_WITHIN_S
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._app is not None:
            Runtime.of(self._app).close()

    def end(self) -> None:
        """After the verdict: every process still running killed with its children (SIGKILL to
        its process group), without waiting for graceful stops, which `stop` gives each worker
        up to STOP_WITHIN_S for (8 s and more of every drill's teardown, on a loaded machine).
        Nothing of the drill is kept: its database is dropped and its Redis emptied after."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):  # its own group: started with start_new_session
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=10)
        if self._app is not None:
            Runtime.of(self._app).close()


class RedisServer:
    """A redis-server of the drill's own on a free loopback port, keeping nothing on disk, so
    that it can be restarted empty without touching the machine's."""

    def __init__(self, log_dir: Path):
        self.port, self.log_dir, self.process = free_port(), log_dir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.log_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(self._answers, timeout=10), "redis-server did not start"

    def crash(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.crash()


class TcpProxy:
    """A loopback TCP proxy in front of the machine's PostgreSQL. `outage(s)` does to Relay's
    connections what a database restart does: every open one is cut, and new ones are refused
    for `s` seconds."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self._down_until, self._links, self._lock = 0.0, [], threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="pg-proxy")
        self._thread.start()

    def url_for(self, database_url: str) -> str:
        return database_url.replace(f":{self.target_port}/", f":{self.port}/")

    def outage(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            links, self._links = self._links, []
        for pair in links:
            for sock in pair:
                sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            if time.monotonic() < self._down_until:
                client.close()  # refused, as a server that is not up
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # cut by an outage
            pass
        finally:
            client.close()
            server.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(timeout=5)
        self.outage(0)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
