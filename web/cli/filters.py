"""The filter options every `relay events` command shares: which events an operator means
(operations.filters.EventFilter)."""

from __future__ import annotations

import functools

import click

from operations.filters import EVENT_STATUSES, EventFilter
from web.cli.support import When, known_destinations


class DestinationName(click.ParamType):
    """A destination's name, checked when the command runs: after `.env` is read (the group
    reads it first), so a plug-in that RELAY_PLUGINS names there is one of the choices."""

    name = "destination"

    def convert(self, value, param, ctx):
        known = sorted(known_destinations())
        if value not in known:
            self.fail(f"{value!r} is not a destination; choose from {', '.join(known)}", param, ctx)
        return value


def filter_options(command):
    """Adds the shared filter options; the command receives them as `filters` (EventFilter)."""

    @click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(EVENT_STATUSES),
        help="Only events in this status (repeatable).",
    )
    @click.option(
        "--type",
        "types",
        multiple=True,
        metavar="TYPE",
        help="Only events of this SparkLoop type, e.g. reward_unlocked (repeatable).",
    )
    @click.option(
        "--destination",
        type=DestinationName(),
        metavar="NAME",
        help="Only events with a delivery to this vendor (sprig, spruce, or a plug-in's name).",
    )
    @click.option(
        "--since",
        type=When(),
        metavar="WHEN",
        help="Received at or after WHEN: an ISO date or date-time (UTC), or an age like 2h, 7d.",
    )
    @click.option("--until", type=When(), metavar="WHEN", help="Received before WHEN (same forms).")
    @click.option(
        "--error", metavar="TEXT", help="Only events with a delivery whose last error contains TEXT (any case)."
    )
    @functools.wraps(command)
    def wrapper(*args, statuses, types, destination, since, until, error, ids=(), **kwargs):
        if since and until and since >= until:
            raise click.BadParameter("--since must be earlier than --until", param_hint="--since")
        filters = EventFilter(
            ids=tuple(ids),
            statuses=statuses,
            types=types,
            destination=destination,
            since=since,
            until=until,
            error=error,
        )
        return command(*args, filters=filters, **kwargs)

    return wrapper
