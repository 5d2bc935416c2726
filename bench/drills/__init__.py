"""Relay's fault drills at the size of the incidents they stand for, one script each (the suite
runs the same scenarios small, tests/test_drill_*.py; the scenarios are in testbed/drills/),
run from the project's root:

    python -m bench.drills.workers_killed      # workers SIGKILLed every few seconds, 3000 events
    python -m bench.drills.redis_flushed       # Redis restarted with its data gone, mid-run
    python -m bench.drills.postgres_restarted  # PostgreSQL away mid-run: the web answers 503
    python -m bench.drills.vendor_down         # a vendor down for a minute
    python -m bench.drills.rate_limit_storm    # 429 storms with Retry-After
    python -m bench.drills.slow_vendor         # a vendor slower than Relay's client timeout
    python -m bench.drills.duplicate_storm     # every webhook three times, some at once
    python -m bench.drills.restart             # rolling restarts of web and workers
    python -m bench.drills.hold                # Spruce held, every process restarted, resumed
    python -m bench.drills.all [names]         # all of them, one after the other

Each ends with one line, `drill <name>: accepted A, done D, failed F, lost L, duplicates U,
429s R`, and exits 1 when L or U is not 0 (the hold drill: a line of its own figures, and exit 1
when a webhook did not reach a vendor once, in order, or Spruce was called while held). `--help` shows a drill's sizes.
"""
