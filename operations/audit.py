"""The audit log: every operator action, by whom, from which interface and address, on which ids,
and how it ended. The operations write it themselves (`audited` around what they do, or `record`),
given an `Actor` by the interface that called them, so the CLI and the console record alike.

An entry holds ids (events, deliveries), an account's email, a person's digest (`person-…`,
workers.erasure.reference), counts and flags: never a subscriber's email or id, never a payload
value. Reasons are short and fixed, or an exception's class name, never its message.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from relay.models import AuditEntry
from relay.runtime import Runtime

log = logging.getLogger("relay.audit")

OK, REFUSED, FAILED = "ok", "refused", "failed"
CLI, CONSOLE = "cli", "console"
# An entry lists at most this many ids of a kind; `details` counts them all.
MAX_IDS = 1000
# Every action an entry can name (group.action), for the console's filter; the tests check
# that each action the operations record is here.
ACTIONS = (
    "console.sign-in",
    "console.sign-out",
    "destinations.hold",
    "destinations.resume",
    "events.purge",
    "events.replay",
    "events.reveal",
    "keys.rotate",
    "subscribers.forget",
    "subscribers.unlink",
    "users.add",
    "users.remove",
    "users.set-password",
    "users.set-role",
)
GROUPS = tuple(sorted({action.split(".")[0] for action in ACTIONS}))


@dataclass(frozen=True)
class Actor:
    """Who acts, as the interface knows them: an account's email (console), RELAY_OPERATOR or
    the OS user (CLI); and the client's address (console)."""

    name: str
    interface: str
    address: str | None = None

    @classmethod
    def cli(cls, operator: str | None) -> Actor:
        """The CLI's actor: RELAY_OPERATOR when set, else the OS user."""
        return cls(operator or _os_user(), CLI)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no name: no passwd entry, no LOGNAME
        return f"uid {os.getuid()}"


def record(
    runtime: Runtime,
    actor: Actor,
    action: str,
    targets: dict[str, Any] | None = None,
    outcome: str = OK,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Write one entry, committed on its own; its id."""
    with runtime.session() as session:
        entry = AuditEntry(
            actor=actor.name,
            interface=actor.interface,
            address=actor.address,
            action=action,
            targets=targets or {},
            details=details or {},
            outcome=outcome,
            reason=reason[:200] if reason else None,
        )
        session.add(entry)
        session.flush()
        entry_id = entry.id
        session.commit()
        return entry_id


@dataclass
class Draft:
    """The entry an `audited` block writes when it ends: the block fills in its targets and
    details as it learns them, and says how a refusal or a failure it knows reads."""

    targets: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = OK
    reason: str | None = None
    # The entry's id, once written (a console page links to it: a replay's progress).
    entry_id: int | None = None

    def ids(self, kind: str, ids: Iterable[int]) -> None:
        """The ids of a kind (`events`, `deliveries`): the first MAX_IDS listed, all counted."""
        listed = list(ids)
        self.targets[kind] = listed[:MAX_IDS]
        if len(listed) > MAX_IDS:
            self.details[f"{kind}_total"] = len(listed)

    def refused(self, reason: str) -> None:
        self.outcome, self.reason = REFUSED, reason

    def failed(self, reason: str) -> None:
        self.outcome, self.reason = FAILED, reason


@contextmanager
def audited(runtime: Runtime, actor: Actor, action: str, **targets: Any) -> Iterator[Draft]:
    """Record the block's action when it ends: as the draft says, or, when it raises, as failed
    (the exception's class name, or what the draft said of it) and the exception goes on."""
    draft = Draft(targets=dict(targets))
    try:
        yield draft
    except BaseException as exc:
        if draft.outcome == OK:
            draft.failed("interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__)
        try:
            record(runtime, actor, action, draft.targets, draft.outcome, draft.reason, draft.details)
        except Exception as unrecorded:  # the store is what failed: say so, raise what happened
            log.error("audit entry for %s not written (%s)", action, type(unrecorded).__name__)
        raise
    draft.entry_id = record(runtime, actor, action, draft.targets, draft.outcome, draft.reason, draft.details)


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    # An action (`events.replay`) or its group (`events`).
    action: str | None = None


def list_entries(
    runtime: Runtime, filters: AuditFilter, limit: int, *, before: int | None = None, after: int | None = None
) -> list[dict]:
    """The newest `limit` entries that match, newest first: of those older than entry `before`
    when given, or the oldest `limit` of those newer than entry `after` (a page back towards
    the newest, keyset paging by id)."""
    query = _matching(filters)
    if after is not None:
        query = query.where(AuditEntry.id > after).order_by(AuditEntry.id.asc())
    else:
        if before is not None:
            query = query.where(AuditEntry.id < before)
        query = query.order_by(AuditEntry.id.desc())
    with runtime.session() as session:
        entries = [entry_summary(entry) for entry in session.scalars(query.limit(limit))]
    return entries[::-1] if after is not None else entries


def any_entry(runtime: Runtime, filters: AuditFilter, *, before: int | None = None, after: int | None = None) -> bool:
    """Whether an entry that matches is older than entry `before` (or newer than `after`)."""
    query = _matching(filters).with_only_columns(AuditEntry.id)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if after is not None:
        query = query.where(AuditEntry.id > after)
    with runtime.session() as session:
        return session.scalar(query.limit(1)) is not None


def _matching(filters: AuditFilter) -> sa.Select:
    query = sa.select(AuditEntry)
    if filters.actor:
        query = query.where(AuditEntry.actor == filters.actor)
    if filters.action:
        group = AuditEntry.action.startswith(filters.action + ".", autoescape=True)
        query = query.where(sa.or_(AuditEntry.action == filters.action, group))
    return query


def entry_summary(entry: AuditEntry) -> dict:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "interface": entry.interface,
        "address": entry.address,
        "action": entry.action,
        "targets": entry.targets,
        "details": entry.details,
        "outcome": entry.outcome,
        "reason": entry.reason,
    }
