"""Sprig: upsert every subscriber the event is about, with attributes and one event each.

Order: each attribute remembers the event (receive time, id) its value came from; an older
event trims the attributes a newer one already set. The Sprig event goes in the same request
(one call per subscriber, the minimum) and is recorded as sent once Sprig answers 202.

Sprig counts every occurrence of an event and takes no idempotency key. So before sending one,
the delivery notes that it is about to; a later run that finds the note without the answer (a
worker died, the answer was lost, a 5xx) reads the user back first, and when Sprig's latest
occurrence of that event is this one (its timestamp, Relay's receive time in ms), counts it as
landed instead of sending it again. Otherwise it sends: exactly once, unless this occurrence
landed and a newer one of the same name for the same person landed before the retry. A call the
throttle or the breaker held back, or a definite refusal (429, 4xx), clears the note: nothing
landed."""

from __future__ import annotations

import time

from relay.models import DeliveryStatus
from workers.context import DeliveryContext
from workers.outcomes import Deferred, DeliveryFailed, ErrorKind
from workers.sprig import ATTRIBUTE_VERSIONS
from workers.sprig.client import SprigClient
from workers.sprig.sends import SprigUser, sprig_user_body
from workers.sprig.settings import sprig_settings
from workers.vendor_errors import VendorError

NOT_LANDED = (ErrorKind.THROTTLED, ErrorKind.PERMANENT, ErrorKind.AUTH)


def upsert_subscribers(ctx: DeliveryContext[SprigClient], sends: SprigUser) -> str | None:
    if not ctx.subscribers:
        raise DeliveryFailed("payload names no subscriber (no email or id found)")
    version = [ctx.received_at_ms, ctx.event_id]
    sprig = sprig_settings(ctx.config)
    progress = ctx.progress
    nothing_to_send = 0
    for role, subscriber in ctx.subscribers:
        attributes_step, events_step = f"sprig.attributes.{role}", f"sprig.events.{role}"
        if progress.done(attributes_step) and progress.done(events_step):
            continue
        try:
            body = sprig_user_body(
                sends,
                ctx.event_type,
                ctx.data,
                subscriber,
                role,
                ctx.received_at_ms,
                user_id_source=sprig.user_id_source,
                attributes=sprig.attributes,
                attribute_prefix=sprig.attribute_prefix,
            )
        except ValueError as exc:  # names the missing field, never its value
            raise DeliveryFailed(f"cannot build the Sprig user for the {role}: {exc}") from None
        applied = dict(ctx.recall(subscriber).get(ATTRIBUTE_VERSIONS) or {})
        body["attributes"] = (
            {}
            if progress.done(attributes_step)
            else {name: value for name, value in body["attributes"].items() if applied.get(name, [0, 0]) <= version}
        )
        sent_step = f"{events_step}.sent"
        if (
            not progress.done(events_step)
            and progress.time_of(sent_step) is not None
            and _counted(ctx, body["userId"], body["events"][0])
        ):
            progress.record(events_step, "found-in-sprig")
        if progress.done(events_step):
            del body["events"]
        if not body["attributes"] and "events" not in body:
            nothing_to_send += 1
            progress.record(attributes_step)
            continue
        if "events" in body:
            progress.mark(sent_step, int(time.time() * 1000))
        try:
            ctx.client.upsert_user(body)
        except (Deferred, VendorError) as err:
            if isinstance(err, Deferred) or err.kind in NOT_LANDED:  # the call did not land
                progress.forget(sent_step)
            raise
        if body["attributes"]:
            versions = applied | dict.fromkeys(body["attributes"], version)
            ctx.remember(subscriber, **{ATTRIBUTE_VERSIONS: versions})
        # One save for both: the one call did both.
        progress.record(attributes_step, True, *([events_step] if "events" in body else []))
    return DeliveryStatus.SUPERSEDED if nothing_to_send == len(ctx.subscribers) else None


def _counted(ctx: DeliveryContext[SprigClient], user_id: str, event: dict) -> bool:
    """Whether Sprig's latest occurrence of this event's name is this one."""
    user = ctx.client.get_user(user_id)
    recorded = next((e for e in (user or {}).get("events") or [] if e.get("event") == event["event"]), None)
    return recorded is not None and recorded.get("updatedAt") == event["timestamp"]
