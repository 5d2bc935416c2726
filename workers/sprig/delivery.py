"""Sprig: upsert every subscriber the event is about, with attributes and one event each.

Order: each attribute remembers the event (receive time, id) its value came from; an older
event trims the attributes a newer one already set. The Sprig event goes in the same request
(one call per subscriber, the minimum); it is recorded as sent with the step once Sprig answers
202 and never sent again. After an ambiguous failure (a timeout after Sprig accepted the
request) the retry sends it again, and Sprig, which counts every occurrence, may count it twice:
at-least-once for Sprig events, exactly-once for attribute values."""
from __future__ import annotations

from relay.models import DeliveryStatus
from schemas.sprig import SprigUser, sprig_user_body
from workers import identity
from workers.context import DeliveryContext
from workers.outcomes import DeliveryFailed


def upsert_subscribers(ctx: DeliveryContext, sends: SprigUser) -> str | None:
    if not ctx.subscribers:
        raise DeliveryFailed("payload names no subscriber (no email or id found)")
    version = [ctx.received_at_ms, ctx.event_id]
    progress = ctx.progress
    nothing_to_send = 0
    for role, subscriber in ctx.subscribers:
        attributes_step, events_step = f"sprig.attributes.{role}", f"sprig.events.{role}"
        if progress.done(attributes_step) and progress.done(events_step):
            continue
        try:
            body = sprig_user_body(sends, ctx.event_type, ctx.data, subscriber, role, ctx.received_at_ms,
                                   user_id_source=ctx.config.sprig_user_id_source)
        except ValueError as exc:  # names the missing field, never its value
            raise DeliveryFailed(f"cannot build the Sprig user for the {role}: {exc}") from None
        applied = identity.sprig_versions(subscriber)
        body["attributes"] = {} if progress.done(attributes_step) else {
            name: value for name, value in body["attributes"].items()
            if applied.get(name, [0, 0]) <= version
        }
        if progress.done(events_step):
            del body["events"]
        if not body["attributes"] and "events" not in body:
            nothing_to_send += 1
            progress.record(attributes_step)
            continue
        ctx.client.upsert_user(body)
        if body["attributes"]:
            identity.remember(subscriber, sprig_attribute_versions=applied | dict.fromkeys(body["attributes"], version))
        progress.record(attributes_step)
        progress.record(events_step)
    return DeliveryStatus.SUPERSEDED if nothing_to_send == len(ctx.subscribers) else None
