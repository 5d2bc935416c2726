"""What every `relay` command shares: store errors as one line, durations, rich output."""
from __future__ import annotations

import functools

import click
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from web.config import parse_seconds

STATUS_STYLES = {
    "done": "green", "succeeded": "green", "superseded": "green",
    "failed": "bold red", "invalid": "magenta", "unhandled": "dim",
    "pending": "yellow", "in_flight": "cyan", "received": "yellow", "processing": "cyan",
}


def store_errors(command):
    """An unreachable or unmigrated database is one clear line and exit code 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (OperationalError, InterfaceError, ProgrammingError) as exc:
            click.echo(f"Error: the database is unreachable or not migrated ({type(exc).__name__}); "
                       "check DATABASE_URL and run `relay db upgrade`", err=True)
            raise SystemExit(1) from None

    return wrapper


class Duration(click.ParamType):
    """90s, 30m, 2h, 7d."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        seconds = parse_seconds(str(value))
        if seconds is None:
            self.fail(f"{value!r} is not a duration like 90s, 30m, 2h or 7d", param, ctx)
        return seconds


def styled(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def console():
    from rich.console import Console

    return Console(highlight=False)


def human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{round(seconds / 3600, 1):g}h"
    return f"{round(seconds / 86400, 1):g}d"
