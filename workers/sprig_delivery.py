"""Sprig: upsert every subscriber the event is about, with attributes and one event each.

Order: each attribute remembers the event (receive time, id) its value came from; an older
event trims the attributes a newer one already set. The Sprig event goes in the same request
(one call per subscriber, the minimum); it is recorded as sent with the step once Sprig answers
202 and never sent again. After an ambiguous failure (a timeout after Sprig accepted the
request) the retry sends it again, and Sprig, which counts every occurrence, may count it twice:
at-least-once for Sprig events, exactly-once for attribute values."""
from __future__ import annotations

from schemas.sparkloop import affected_subscribers
from schemas.sprig import sprig_user_body
from web.models import DeliveryStatus
from workers import identity
from workers.context import DeliveryContext, DeliveryFailed


def upsert_subscribers(ctx: DeliveryContext) -> str | None:
    subscribers = affected_subscribers(ctx.event_type, ctx.data)
    if not subscribers:
        raise DeliveryFailed("payload names no subscriber (no email or id found)")
    version = [ctx.received_at_ms, ctx.event_id]
    nothing_to_send = 0
    for role, subscriber in subscribers:
        attributes_step, events_step = f"sprig.attributes.{role}", f"sprig.events.{role}"
        if ctx.done(attributes_step) and ctx.done(events_step):
            continue
        try:
            body = sprig_user_body(
                ctx.event_type, ctx.data, subscriber, role, ctx.received_at_ms,
                user_id_source=ctx.config.sprig_user_id_source,
            )
        except ValueError as exc:  # names the missing field, never its value
            raise DeliveryFailed(f"cannot build the Sprig user for the {role}: {exc}") from None
        applied = identity.sprig_versions(subscriber)
        body["attributes"] = {} if ctx.done(attributes_step) else {
            name: value for name, value in body["attributes"].items()
            if applied.get(name, [0, 0]) <= version
        }
        if ctx.done(events_step):
            del body["events"]
        if not body["attributes"] and "events" not in body:
            nothing_to_send += 1
            ctx.record(attributes_step)
            continue
        ctx.sprig.upsert_user(body)
        if body["attributes"]:
            identity.remember(subscriber, sprig_attribute_versions=applied | dict.fromkeys(body["attributes"], version))
        ctx.record(attributes_step)
        ctx.record(events_step)
    return DeliveryStatus.SUPERSEDED if nothing_to_send == len(subscribers) else None
