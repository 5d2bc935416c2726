"""Fault drills with real processes: supervised workers (`relay worker`), beat, a stream of
webhooks, and the faults of Relay's own infrastructure (workers killed, Redis restarted empty,
PostgreSQL restarted, a rolling deploy) and of its vendors (one down for a while, 429 storms with
Retry-After, one slower than the client timeout), and SparkLoop sending every webhook three
times. Each scenario returns what it measured, with one tally (`Tally`: accepted, done, failed,
lost, duplicate effects at the vendors, 429s); the suite runs them small (tests/test_drill_*.py)
and bench/drills/ at the size of the incidents they stand for.

The web side is the Flask test client in this process, posting from a thread; the workers and
beat are processes of their own, so whatever they must agree on goes through PostgreSQL and
Redis. Every process started here is ended here, by its pid.

processes: the drill's processes, its redis-server, the PostgreSQL proxy; traffic: the
webhooks; verdicts: what a drill measured and its tally; scenarios: the drills themselves.
"""
