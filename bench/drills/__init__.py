"""Relay's fault drills at the size of the incidents they stand for, one script each (the suite
runs the same scenarios small, tests/test_drill_*.py; the scenarios are in tests/drills.py):

    python bench/drills/workers_killed.py      # workers SIGKILLed every few seconds, 3000 events
    python bench/drills/redis_flushed.py       # Redis restarted with its data gone, mid-run
    python bench/drills/postgres_restarted.py  # PostgreSQL away mid-run: the web answers 503
    python bench/drills/vendor_down.py         # a vendor down for a minute
    python bench/drills/rate_limit_storm.py    # 429 storms with Retry-After
    python bench/drills/slow_vendor.py         # a vendor slower than Relay's client timeout
    python bench/drills/duplicate_storm.py     # every webhook three times, some at once
    python bench/drills/restart.py             # rolling restarts of web and workers
    python bench/drills/all.py [names]         # all of them, one after the other

Each ends with one line, `drill <name>: accepted A, done D, failed F, lost L, duplicates U,
429s R`, and exits 1 when L or U is not 0. `--help` shows a drill's sizes.
"""
