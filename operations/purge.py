"""Purging finished events by hand (workers.retention deletes them; beat runs the same daily)."""

from __future__ import annotations

from dataclasses import dataclass

from operations import audit
from operations.audit import Actor
from relay.models import utcnow
from relay.runtime import Runtime
from workers import retention
from workers.retention import Ages, RunResult


@dataclass(frozen=True)
class PurgePlan:
    """What a purge at these ages would delete: `count` finished events."""

    ages: Ages
    count: int


def plan_purge(runtime: Runtime, *, older_than_s: float | None = None, include_failed: bool = False) -> PurgePlan:
    """The ages a purge uses (older than `older_than_s`, else RELAY_RETENTION; failed and
    invalid events at RELAY_RETENTION_FAILED if that is longer, unless `include_failed`) and
    how many events they allow to delete now."""
    config = runtime.config
    age = config.retention_s if older_than_s is None else older_than_s
    ages = Ages(age, age if include_failed else max(age, config.retention_failed_s))
    with runtime.session() as session:
        return PurgePlan(ages, retention.purge_count(session, ages.conditions(utcnow())))


def purge(runtime: Runtime, ages: Ages, *, actor: Actor, recorded_as: str | None = None) -> RunResult:
    """Delete what `ages` allow, batch by batch, audited as `actor`'s; with `recorded_as`, record
    the run as a retention run by that name (what `relay doctor` reports)."""
    with audit.audited(runtime, actor, "events.purge") as entry:
        entry.details |= {"older_than_s": ages.finished_s, "failed_older_than_s": ages.failed_s}
        result = retention.purge(ages, db=runtime.db)
        entry.details |= {"purged": result.purged, "complete": result.complete}
    if recorded_as is not None:
        retention.record_run(runtime.redis, by=recorded_as, result=result)
    return result
