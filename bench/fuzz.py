"""The webhook under hostile input, at scale: the test suite's property-based cases (random
JSON trees, mutated documented examples, random headers; testbed/payloads.py), ten thousand or
more per store, through the real endpoint on SQLite and on PostgreSQL, then the accepted events
delivered to the sandbox; then schemathesis against the endpoint's own /openapi.json over
real HTTP, with all its checks and its examples, coverage and fuzzing phases
(tests/test_contract.py runs the same, CI-sized, in process); and, where the vendors' OpenAPI
documents are at hand (../shared/vendors/openapi/), schemathesis against the sandbox's Sprig and
Spruce with them: its answers must be the ones the vendors document.

    python -m bench.fuzz [--cases 10000] [--schemathesis-examples 500] [--seed N]

Prints the tally of answers by status and of event states, per store; exits 1 on any 5xx, any
400 without field errors, any accepted event not stored or not finished, or any schemathesis
failure. Needs the machine's PostgreSQL (it recreates the database `relay_bench_fuzz`) and
Redis (it flushes db 14); RELAY_BENCH_DATABASE_URL and RELAY_BENCH_REDIS_URL name others.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from werkzeug.serving import make_server

from sandbox import SandboxSettings, serve_in_thread
from testbed.apps import TERMINAL, events, fresh_services, make_app, run_pending
from testbed.payloads import bodies, check_answer, headers
from testbed.services import migrated_from_scratch
from relay.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent

PG_URL = os.environ.get("RELAY_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/relay_bench_fuzz")
REDIS_URL = os.environ.get("RELAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="property-based cases per store")
    parser.add_argument("--schemathesis-examples", type=int, default=500,
                        help="schemathesis examples per operation and phase (0: skip it)")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis' seed (default: a new one, printed)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per case otherwise
    workdir = Path(tempfile.mkdtemp(prefix="relay-fuzz-"))
    sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings())
    failures = 0
    try:
        for store, url in (("sqlite", f"sqlite:///{workdir / 'fuzz.sqlite3'}"), ("postgresql", migrated_from_scratch(PG_URL))):
            env = fresh_services(url, REDIS_URL, sandbox, workdir / store) | {"RELAY_RETRY_MAX_ATTEMPTS": "2"}
            failures += fuzz(store, make_app(env), args.cases)
        if args.schemathesis_examples:
            env = fresh_services(f"sqlite:///{workdir / 'st.sqlite3'}", REDIS_URL, sandbox, workdir / "st")
            failures += run_schemathesis(make_app(env), env["SPARKLOOP_WEBHOOK_TOKEN"], args.schemathesis_examples,
                                         args.seed, workdir)
            failures += run_schemathesis_on_sandbox(sandbox, args.schemathesis_examples, workdir)
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("result:", "ok" if not failures else f"{failures} failing run(s)")
    return 1 if failures else 0


def fuzz(store: str, app, cases: int) -> int:
    client, tally, problems = app.test_client(), Counter(), []
    started = time.monotonic()

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies, header_set=headers)
    def post(body, header_set):
        raw = body.encode("utf-8", "surrogatepass")
        response = client.post("/webhooks/sparkloop", data=raw, headers=header_set)
        try:
            tally[check_answer(app, raw, response)] += 1
        except AssertionError as failed:
            tally[str(response.status_code)] += 1
            problems.append(str(failed)[:300])

    post()
    posted_s = time.monotonic() - started
    run_pending(app, rounds=4)
    states = Counter(e.status for e in events(app))
    unfinished = {s: n for s, n in states.items() if s not in TERMINAL}
    print(f"{store}: {sum(tally.values())} cases in {posted_s:.0f} s; answers "
          + ", ".join(f"{status} {n}" for status, n in sorted(tally.items()))
          + "; events " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
    for problem in problems[:10]:
        print("  problem:", problem)
    if unfinished:
        print("  not finished:", unfinished)
    Runtime.of(app).close()
    return int(bool(problems or unfinished or any(int(s) >= 500 for s in tally)))


def run_schemathesis(app, token: str, examples: int, seed: int | None, workdir: Path) -> int:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seeded = ["--seed", str(seed)] if seed is not None else []
    try:
        return schemathesis("relay", [f"http://127.0.0.1:{server.server_port}/openapi.json",
                                      "--header", f"SparkLoop-Token: {token}", "--checks", "all",
                                      "--phases", "examples,coverage,fuzzing", "--continue-on-failure",
                                      *seeded], examples, workdir)
    finally:
        server.shutdown()
        thread.join(timeout=10)


# The operations the sandbox imitates; the rest of each document is not Relay's concern.
SANDBOXED = {"sprig": ("/sprig", "API-Key sandbox-sprig-key", r"^/v2/users(/\{userId\})?$"),
             "spruce": ("/spruce/v1", "Bearer sandbox-spruce-token",
                        r"^/(contacts|contacts/search|contacts/\{contactId\}|contacts/\{contactId\}/conversations"
                        r"|conversations|conversations/\{conversationId\}|conversations/\{conversationId\}/messages"
                        r"|conversations/\{conversationId\}/items)$")}


def run_schemathesis_on_sandbox(sandbox, examples: int, workdir: Path) -> int:
    documents = ROOT.parent / "shared" / "vendors" / "openapi"
    if not documents.is_dir():
        print("schemathesis on the sandbox: skipped (the vendors' OpenAPI documents are not here)")
        return 0
    sandbox.reset()
    sandbox.configure(rate_limit={"sprig": {"limit": 1_000_000}, "spruce": {"limit": 1_000_000}})
    failed = 0
    for vendor, (prefix, authorization, paths) in SANDBOXED.items():
        failed += schemathesis(f"the sandbox's {vendor}", [
            str(documents / f"{vendor}.json"), "--url", sandbox.url + prefix, "--header", f"Authorization: {authorization}",
            "--include-path-regex", paths, "--checks", "not_a_server_error,response_schema_conformance"], examples,
            workdir)
    return failed


def schemathesis(name: str, arguments: list[str], examples: int, workdir: Path) -> int:
    """Run the CLI in `workdir`: its caches (.schemathesis/, .hypothesis/) go there, not into the checkout."""
    command = str(Path(sys.executable).with_name("schemathesis"))
    if not Path(command).exists():
        print(f"schemathesis ({name}): not installed (python -m pip install -e '.[bench]')")
        return 1
    result = subprocess.run([command, "run", *arguments, "--max-examples", str(examples), "--no-color"],
                            capture_output=True, text=True, timeout=1800, cwd=workdir)
    print(f"schemathesis ({name}): exit {result.returncode}")
    for line in [line for line in result.stdout.splitlines() if line.strip()][-14:]:
        print("  " + line)
    return int(result.returncode != 0)


if __name__ == "__main__":
    sys.exit(main())
