"""What every `relay` command shares: store errors as one line, durations and moments as
option types, rich output."""

from __future__ import annotations

import functools
import os
from datetime import datetime

import click

from operations.store import STORE_UNAVAILABLE
from relay.destinations import PLUGINS_VARIABLE, Registry
from relay.durations import parse_duration, parse_when
from relay.sealing import SealedDataError

STATUS_STYLES = {
    "done": "green",
    "succeeded": "green",
    "superseded": "green",
    "failed": "bold red",
    "invalid": "magenta",
    "unhandled": "dim",
    "pending": "yellow",
    "in_flight": "cyan",
    "received": "yellow",
    "processing": "cyan",
}


def known_destinations() -> Registry:
    """The destinations a command's options name before its app exists (help texts, option
    checks): the installed ones and RELAY_PLUGINS' (`.env` is read by then: web.cli.RelayGroup)."""
    return Registry.discover(os.environ.get(PLUGINS_VARIABLE))


def store_errors(command):
    """An unreachable or unmigrated database is one clear line and exit code 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except STORE_UNAVAILABLE as exc:
            click.echo(
                f"Error: the database is unreachable or not migrated ({type(exc).__name__}); "
                "check DATABASE_URL and run `relay db upgrade`",
                err=True,
            )
            raise SystemExit(1) from None
        except SealedDataError as exc:  # its message names the key id, never data
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(1) from None

    return wrapper


class Duration(click.ParamType):
    """90s, 30m, 2h, 7d, 2w."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class When(click.ParamType):
    name = "when"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_when(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def styled(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def console():
    from rich.console import Console

    return Console(highlight=False)


def counted(count: int, noun: str) -> str:
    """`1 page`, `2 pages`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
