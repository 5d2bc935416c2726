"""`relay worker` keeps its Celery worker running: a child that dies is started again at once,
SIGTERM reaches the child, and a child that cannot even start is given up on (so that the
platform shows the crash)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from click.testing import CliRunner

from testbed.waiting import wait_for

CHILD = textwrap.dedent("""
    import signal, sys, time
    log = sys.argv[1]
    starts = len(open(log).readlines()) if __import__("os").path.exists(log) else 0
    open(log, "a").write("started\\n")
    def stop(*_):
        open(log, "a").write("terminated\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    if starts < 2:
        time.sleep(0.3)
        sys.exit(3)  # died by itself, like a consumer that lost Redis
    time.sleep(60)
""")
SUPERVISOR = textwrap.dedent("""
    import sys
    from relay import supervisor
    supervisor.QUICK_DEATH_S = 0.1  # the child's 0.3 s count as having started
    supervisor.RESTART_DELAYS_S = (0.1,)
    sys.exit(supervisor.supervise([sys.executable, sys.argv[1], sys.argv[2]]))
""")


def test_a_worker_that_dies_is_started_again_and_sigterm_reaches_it(tmp_path):
    child, log = tmp_path / "child.py", tmp_path / "starts.log"
    child.write_text(CHILD)
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(child), str(log)])
    try:
        # Three starts of a Python child under a supervisor that imports Relay: seconds on a quiet
        # machine, more under the suite's own load (seen: over 20 s).
        assert wait_for(lambda: log.exists() and log.read_text().count("started") == 3, timeout=90)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0  # the child's own exit code, after its warm stop
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=10)
    assert log.read_text().splitlines() == ["started", "started", "started", "terminated"]


def test_a_worker_that_cannot_start_is_given_up_on(tmp_path):
    from relay import supervisor

    starts = tmp_path / "starts"
    command = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(4)"]
    assert supervisor.supervise(command, sleep=lambda _: None) == 4
    assert starts.read_text() == "x" * supervisor.GIVE_UP_AFTER


def test_relay_worker_becomes_a_supervisor_of_celery_that_imports_no_app(monkeypatch):
    # `relay worker` replaces itself (exec: the process a PaaS started, its pid and signals) with
    # the supervisor, a module that loads neither Flask nor the engine.
    import os

    from web.cli import main

    execs = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: execs.append((path, argv, env)))
    result = CliRunner().invoke(main, ["worker", "--concurrency", "3"], env={"LOG_FORMAT": "json"})
    assert result.exit_code == 0, result.output
    [(path, argv, env)] = execs
    assert argv == [sys.executable, "-m", "relay.supervisor", sys.executable, "-m", "celery", "-A", "workers",
                    "--quiet", "worker", "--concurrency", "3"]
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    loaded = subprocess.run([sys.executable, "-c", "import sys, relay.supervisor; print(sorted(sys.modules))"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "flask" not in loaded and "celery" not in loaded and "sqlalchemy" not in loaded
