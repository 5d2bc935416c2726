"""Every drill, one after the other, each in a process of its own and with its default sizes:

    python -m bench.drills.all                       # all of them
    python -m bench.drills.all vendor_down restart   # some

Each drill's output passes through; at the end its summary lines again, together. Exits 1 when
any drill did (something lost or duplicated) or did not end with its summary line.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRILLS = ("workers_killed", "redis_flushed", "postgres_restarted", "vendor_down", "rate_limit_storm",
          "slow_vendor", "duplicate_storm", "restart", "hold", "budget", "alerts")
# Every drill bounds its own waits; this is for a drill that hangs all the same: SIGINT, so that
# it stops its processes on the way out, and SIGKILL a minute later.
TIMEOUT_S = 1800


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(DRILLS))
    if unknown:
        print(f"unknown drills: {', '.join(unknown)} (known: {', '.join(DRILLS)})", file=sys.stderr)
        return 2
    summaries, failed = [], 0
    for name in names or DRILLS:
        process = subprocess.Popen([sys.executable, "-m", f"bench.drills.{name}"], cwd=ROOT, stdout=subprocess.PIPE,
                                   text=True)
        timers = [threading.Timer(TIMEOUT_S, process.send_signal, (signal.SIGINT,)),
                  threading.Timer(TIMEOUT_S + 60, process.kill)]
        for timer in timers:
            timer.start()
        last = ""
        for line in process.stdout:
            print(line, end="", flush=True)
            last = line.strip() or last
        code = process.wait()
        for timer in timers:
            timer.cancel()
        if not last.startswith(f"drill {name}:"):
            last = f"drill {name}: ended without its summary (exit {code})"
        summaries.append(last)
        failed += code != 0
    print("\n".join(summaries))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
