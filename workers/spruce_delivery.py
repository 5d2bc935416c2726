"""Spruce: find or create the subscriber's contact; for rewards, post an internal note for staff
into a note conversation associated with the contact. Every POST carries an idempotency key
derived from the delivery or the subject, and a 422 "duplicate" means an earlier attempt landed."""
from __future__ import annotations

import hashlib
import time

from schemas.sparkloop import Subscriber, affected_subscribers
from schemas.spruce import contact_body, note_conversation_body, note_message_body
from workers import identity
from workers.context import DeliveryContext, DeliveryFailed, RetryLater
from workers.vendor_errors import VendorError

NOTE_TITLE = "SparkLoop referrals"
# Spruce keeps idempotency keys for 24 h; an hour's margin for clocks and slow attempts.
IDEMPOTENCY_WINDOW_MS = 23 * 3600 * 1000


def ensure_contact(ctx: DeliveryContext) -> str:
    subscriber = _subject(ctx)
    return _contact(ctx, subscriber, identity.lookup(subscriber))


def post_reward_note(ctx: DeliveryContext) -> None:
    subscriber = _subject(ctx)
    link = identity.lookup(subscriber)
    contact_id = _contact(ctx, subscriber, link)
    known = link.spruce_note_conversation_id if link and link.spruce_contact_id == contact_id else None
    conversation_id = _note_conversation(ctx, subscriber, contact_id, known)
    if ctx.done("spruce.note"):
        return
    body = note_message_body(ctx.event_type, ctx.data)
    first_attempt_ms = ctx.steps.get("spruce.note.first_attempt_ms")
    if first_attempt_ms is None:
        ctx.record("spruce.note.first_attempt_ms", _now_ms())
    elif _now_ms() - first_attempt_ms > IDEMPOTENCY_WINDOW_MS:
        # Spruce has forgotten our key by now: look for the note before posting it again.
        if _note_already_posted(ctx, conversation_id, body["body"][0]["value"]):
            ctx.record("spruce.note", "found-in-conversation")
            return
    try:
        request_id = ctx.spruce.post_message(
            conversation_id, body, idempotency_key=f"relay-note-{ctx.delivery_id}",
        )
    except VendorError as err:
        if err.kind != "duplicate":
            raise
        request_id = "accepted-earlier"  # Spruce does not replay the first response
    ctx.record("spruce.note", request_id)


def _note_already_posted(ctx: DeliveryContext, conversation_id: str, text: str) -> bool:
    return any(
        item.get("isInternalNote") and item.get("text") == text
        for item in ctx.spruce.iter_conversation_items(conversation_id, order="newest_first")
    )


def _subject(ctx: DeliveryContext) -> Subscriber:
    subscribers = dict(affected_subscribers(ctx.event_type, ctx.data))
    subscriber = subscribers.get("subscriber") or next(iter(subscribers.values()), None)
    if subscriber is None or not subscriber.email:
        raise DeliveryFailed("payload has no subscriber email to find the Spruce contact by")
    return subscriber


def _find_or_create_contact(ctx: DeliveryContext, subscriber: Subscriber) -> str:
    if not _recently_found_nothing(ctx, "spruce.contact.search_empty_ms"):
        found = ctx.spruce.search_contacts_by_email(subscriber.email)
        if found:
            return _lowest_id(found)
        ctx.record("spruce.contact.search_empty_ms", _now_ms())
    email_hash = hashlib.sha256(subscriber.email.encode()).hexdigest()
    try:
        return ctx.spruce.create_contact(
            contact_body(subscriber), idempotency_key=f"relay-contact-{email_hash}"
        )["id"]
    except VendorError as err:
        if err.kind != "duplicate":
            raise
    found = ctx.spruce.search_contacts_by_email(subscriber.email)
    if found:
        return _lowest_id(found)
    raise RetryLater("Spruce contact created by an earlier attempt is not searchable yet")


def _contact(ctx: DeliveryContext, subscriber: Subscriber, link) -> str:
    if ctx.done("spruce.contact"):
        return ctx.steps["spruce.contact"]
    contact_id = link.spruce_contact_id if link else None
    if contact_id is None:
        contact_id = _find_or_create_contact(ctx, subscriber)
        identity.remember(subscriber, spruce_contact_id=contact_id)
    ctx.record("spruce.contact", contact_id)
    return contact_id


def _note_conversation(ctx: DeliveryContext, subscriber: Subscriber, contact_id: str,
                       known: str | None) -> str:
    if ctx.done("spruce.conversation"):
        return ctx.steps["spruce.conversation"]
    conversation_id = known
    if conversation_id is None and not _recently_found_nothing(ctx, "spruce.conversation.list_empty_ms"):
        conversation_id = _find_note_conversation(ctx, contact_id)
        if conversation_id is None:
            ctx.record("spruce.conversation.list_empty_ms", _now_ms())
    if conversation_id is None:
        body = note_conversation_body(contact_id, list(ctx.config.spruce_note_member_ids), NOTE_TITLE)
        try:
            conversation_id = ctx.spruce.create_conversation(
                body, idempotency_key=f"relay-noteconv-{contact_id}"
            )["id"]
        except VendorError as err:
            if err.kind != "duplicate":
                raise
            conversation_id = _find_note_conversation(ctx, contact_id)
            if conversation_id is None:
                raise RetryLater("Spruce note conversation created earlier is not listed yet") from None
    identity.remember(subscriber, spruce_note_conversation_id=conversation_id)
    ctx.record("spruce.conversation", conversation_id)
    return conversation_id


def _recently_found_nothing(ctx: DeliveryContext, step: str) -> bool:
    """A read that found nothing is a finished step too: a delivery throttled between the read
    and the create resumes at the create, so every call it spends moves it forward. Trusted only
    within the idempotency window, where the create's key still guards against a duplicate."""
    found_nothing_ms = ctx.steps.get(step)
    return found_nothing_ms is not None and _now_ms() - found_nothing_ms < IDEMPOTENCY_WINDOW_MS


def _now_ms() -> int:
    return int(time.time() * 1000)


def _find_note_conversation(ctx: DeliveryContext, contact_id: str) -> str | None:
    ours = [
        c for c in ctx.spruce.list_contact_conversations(contact_id)
        if c.get("type") == "note" and c.get("title") == NOTE_TITLE
    ]
    return _lowest_id(ours) if ours else None


def _lowest_id(items: list[dict]) -> str:
    # Several matches: pick deterministically, as Spruce sorts structured searches by id.
    return min(item["id"] for item in items)
