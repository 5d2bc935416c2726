"""Sprig: upsert every subscriber the event is about, with attributes and one event each."""
from __future__ import annotations

from schemas.sparkloop import affected_subscribers
from schemas.sprig import sprig_user_body
from workers.context import DeliveryContext, DeliveryFailed


def upsert_subscribers(ctx: DeliveryContext) -> None:
    subscribers = affected_subscribers(ctx.event_type, ctx.data)
    if not subscribers:
        raise DeliveryFailed("payload names no subscriber (no email or id found)")
    for role, subscriber in subscribers:
        step = f"sprig.upsert.{role}"
        if ctx.done(step):
            continue
        try:
            body = sprig_user_body(
                ctx.event_type, ctx.data, subscriber, role, ctx.received_at_ms,
                user_id_source=ctx.config.sprig_user_id_source,
            )
        except ValueError as exc:  # names the missing field, never its value
            raise DeliveryFailed(f"cannot build the Sprig user for the {role}: {exc}") from None
        ctx.sprig.upsert_user(body)
        ctx.record(step)
