"""`relay backfill` in a test: SparkLoop subscribers made in the sandbox's API, the command run
through Flask's CLI runner (its output checked for personal data and the key every time), and
the events it created."""

from __future__ import annotations

from datetime import timedelta

from relay.models import Event, utcnow
from testbed.apps import events
from web.cli.backfill import backfill_command

API_KEY = "sandbox-sparkloop-key"


def seed(sandbox, *hours_ago: float, first: int = 0, **fields) -> list[dict]:
    """SparkLoop subscribers created that many hours ago, numbered from `first`."""
    now = utcnow()
    return sandbox.add_sparkloop_subscribers(
        [
            {
                "email": f"person{n}@example.com",
                "name": f"Person Number{n}",
                "created_at": (now - timedelta(hours=h)).isoformat(),
                **fields,
            }
            for n, h in enumerate(hours_ago, start=first)
        ]
    )


def backfill(app, *args: str):
    result = app.test_cli_runner().invoke(backfill_command, list(args))
    assert "Traceback" not in result.output, result.output
    assert "@" not in result.output and "Number" not in result.output, "personal data in the output"
    assert API_KEY not in result.output
    return result


def backfilled(app) -> list[Event]:
    return [e for e in events(app) if e.source == "backfill"]
