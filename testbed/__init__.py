"""What the tests and the benchmarks run Relay on, shared by both: the test services
(PostgreSQL, Redis, the sandbox) and apps built on them, SparkLoop's examples, the fault drills,
the fuzzer's payloads, `relay dev` as a process. tests/ holds only test modules and the pytest
fixtures of conftest.py; bench/ only benchmark scripts. Both import this package, found because
the project's root is on the path: pytest's `pythonpath` option, `python -m bench.…`."""
