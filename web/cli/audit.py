"""`relay audit list`: the audit log (operations.audit), newest first; and who the CLI acts as
(`cli_actor`: RELAY_OPERATOR, else the OS user), for every command that acts."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from operations.audit import Actor, AuditFilter, list_entries
from relay.runtime import Runtime
from web.cli.support import console, store_errors

OUTCOME_STYLES = {"ok": "green", "refused": "yellow", "failed": "bold red"}


def cli_actor(runtime: Runtime) -> Actor:
    return Actor.cli(runtime.config.operator)


@click.group("audit")
def audit_group():
    """The audit log: who did what, on which ids, with what outcome (CLI and console)."""


@audit_group.command("list")
@click.option("--actor", metavar="WHO", help="Only this person's actions (an account's email, or RELAY_OPERATOR's).")
@click.option(
    "--action", metavar="ACTION", help="Only this action (events.replay) or group of actions (events, users)."
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many entries."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@with_appcontext
@store_errors
def audit_list(actor: str | None, action: str | None, limit: int, as_json: bool):
    """List audit entries, newest first."""
    entries = list_entries(Runtime.of(current_app), AuditFilter(actor=actor, action=action), limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo("no audit entry matches")
        return
    from rich.markup import escape
    from rich.table import Column, Table

    # Whole times and names, folded rather than cut short on a narrow terminal.
    table = Table(
        "id",
        Column("when (UTC)", no_wrap=True),
        *(Column(name, overflow="fold") for name in ("who", "from", "action", "on", "outcome")),
    )
    for e in entries:
        where = e["interface"] + (f" {e['address']}" if e["address"] else "")
        outcome = f"[{OUTCOME_STYLES.get(e['outcome'], '')}]{e['outcome']}[/]"
        if e["reason"]:
            outcome += f": {escape(e['reason'])}"
        cells = (e["actor"], where, e["action"], _targets(e))
        table.add_row(str(e["id"]), e["at"][:19], *map(escape, cells), outcome)
    console().print(table)


def _targets(entry: dict) -> str:
    parts = []
    for kind, value in entry["targets"].items():
        if isinstance(value, list):
            total = entry["details"].get(f"{kind}_total", len(value))
            shown = ", ".join(map(str, value[:5]))
            more = f" (+{total - min(len(value), 5)} more)" if total > 5 else ""
            parts.append(f"{kind} {shown}{more}" if value else f"{kind}: none")
        else:
            parts.append(f"{kind} {value}")
    details = ", ".join(f"{k} {v}" for k, v in entry["details"].items() if not k.endswith("_total"))
    return "; ".join(parts + ([details] if details else [])) or "-"
