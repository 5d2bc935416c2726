"""One record per subscriber the event names, each a step of its own (a retry resumes after the
last one Ledger took), keyed by the delivery and the role so that a repeated call is one record.
A record belongs to the subscriber's account at Ledger: the first one opens it, and Relay
remembers its id (workers.identity) to name it in the next."""

from __future__ import annotations

from testbed.third_destination import ACCOUNT_ID, Record
from testbed.third_destination.client import LedgerClient
from workers.context import DeliveryContext
from workers.outcomes import DeliveryFailed


def deliver(ctx: DeliveryContext[LedgerClient], sends: Record) -> str | None:
    if not ctx.subscribers:
        raise DeliveryFailed("payload names no subscriber")
    for role, subscriber in ctx.subscribers:
        step = f"ledger.{role}"
        if ctx.progress.done(step):
            continue
        account = ctx.recall(subscriber).get(ACCOUNT_ID)
        body = {
            "kind": sends.kind,
            "event": ctx.event_type,
            "role": role,
            "email": subscriber.email,
            "account": account,
        }
        answer = ctx.client.record(body, key=f"relay-{ctx.delivery_id}-{role}")
        if answer["account"] != account:
            ctx.remember(subscriber, **{ACCOUNT_ID: answer["account"]})
        ctx.progress.record(step, str(answer["id"]))
    return None
