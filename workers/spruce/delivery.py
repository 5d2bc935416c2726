"""Spruce: find or create the subscriber's contact; for a note, post an internal note for staff
into a note conversation associated with the contact. Every POST carries an idempotency key
derived from the delivery or the subject, and a 422 "duplicate" means an earlier attempt landed."""
from __future__ import annotations

import hashlib
import time

from schemas.note_template import note_text
from schemas.sparkloop import Subscriber
from schemas.spruce import (
    SpruceContact, SpruceNote, contact_body, note_conversation_body, note_message_body,
)
from workers import identity
from workers.context import DeliveryContext
from workers.outcomes import DeliveryFailed, ErrorKind, RetryLater
from workers.vendor_errors import VendorError

NOTE_TITLE = "SparkLoop referrals"
# Spruce keeps idempotency keys for 24 h; an hour's margin for clocks and slow attempts.
IDEMPOTENCY_WINDOW_MS = 23 * 3600 * 1000
# Finished steps (Progress.steps) and the times later attempts rely on (Progress.times).
CONTACT, CONVERSATION, NOTE = "spruce.contact", "spruce.conversation", "spruce.note"
CONTACT_SEARCH_EMPTY = "spruce.contact.search_empty"
CONVERSATION_LIST_EMPTY = "spruce.conversation.list_empty"
NOTE_FIRST_ATTEMPT = "spruce.note.first_attempt"


def deliver(ctx: DeliveryContext, sends: SpruceContact | SpruceNote) -> None:
    subscriber = _subject(ctx)
    link = identity.lookup(subscriber)
    contact_id = _contact(ctx, subscriber, link)
    if isinstance(sends, SpruceNote):
        known = link.spruce_note_conversation_id if link and link.spruce_contact_id == contact_id else None
        conversation_id = _note_conversation(ctx, subscriber, contact_id, known)
        text = note_text(sends.text, ctx.event_type, ctx.data, ctx.config.spruce_note_template)
        _post_note(ctx, conversation_id, text)


def _post_note(ctx: DeliveryContext, conversation_id: str, text: str) -> None:
    progress = ctx.progress
    if progress.done(NOTE):
        return
    first_attempt_ms = progress.time_of(NOTE_FIRST_ATTEMPT)
    if first_attempt_ms is None:
        progress.mark(NOTE_FIRST_ATTEMPT, _now_ms())
    elif _now_ms() - first_attempt_ms > IDEMPOTENCY_WINDOW_MS:
        # Spruce has forgotten our key by now: look for the note before posting it again.
        if _note_already_posted(ctx, conversation_id, text):
            progress.record(NOTE, "found-in-conversation")
            return
    try:
        request_id = ctx.client.post_message(
            conversation_id, note_message_body(text), idempotency_key=f"relay-note-{ctx.delivery_id}",
        )
    except VendorError as err:
        if err.kind != ErrorKind.DUPLICATE:
            raise
        request_id = "accepted-earlier"  # Spruce does not replay the first response
    progress.record(NOTE, request_id)


def _note_already_posted(ctx: DeliveryContext, conversation_id: str, text: str) -> bool:
    return any(
        item.get("isInternalNote") and item.get("text") == text
        for item in ctx.client.iter_conversation_items(conversation_id, order="newest_first")
    )


def _subject(ctx: DeliveryContext) -> Subscriber:
    subscribers = dict(ctx.subscribers)
    subscriber = subscribers.get("subscriber") or next(iter(subscribers.values()), None)
    if subscriber is None or not subscriber.email:
        raise DeliveryFailed("payload has no subscriber email to find the Spruce contact by")
    return subscriber


def _find_or_create_contact(ctx: DeliveryContext, subscriber: Subscriber) -> str:
    if not _recently_found_nothing(ctx, CONTACT_SEARCH_EMPTY):
        found = ctx.client.search_contacts_by_email(subscriber.email)
        if found:
            return _lowest_id(found)
        ctx.progress.mark(CONTACT_SEARCH_EMPTY, _now_ms())
    email_hash = hashlib.sha256(subscriber.email.encode()).hexdigest()
    try:
        return ctx.client.create_contact(
            contact_body(subscriber), idempotency_key=f"relay-contact-{email_hash}"
        )["id"]
    except VendorError as err:
        if err.kind != ErrorKind.DUPLICATE:
            raise
    found = ctx.client.search_contacts_by_email(subscriber.email)
    if found:
        return _lowest_id(found)
    raise RetryLater("Spruce contact created by an earlier attempt is not searchable yet")


def _contact(ctx: DeliveryContext, subscriber: Subscriber, link) -> str:
    if ctx.progress.done(CONTACT):
        return ctx.progress.result(CONTACT)
    contact_id = link.spruce_contact_id if link else None
    if contact_id is None:
        contact_id = _find_or_create_contact(ctx, subscriber)
        identity.remember(subscriber, spruce_contact_id=contact_id)
    ctx.progress.record(CONTACT, contact_id)
    return contact_id


def _note_conversation(ctx: DeliveryContext, subscriber: Subscriber, contact_id: str,
                       known: str | None) -> str:
    if ctx.progress.done(CONVERSATION):
        return ctx.progress.result(CONVERSATION)
    conversation_id = known
    if conversation_id is None and not _recently_found_nothing(ctx, CONVERSATION_LIST_EMPTY):
        conversation_id = _find_note_conversation(ctx, contact_id)
        if conversation_id is None:
            ctx.progress.mark(CONVERSATION_LIST_EMPTY, _now_ms())
    if conversation_id is None:
        body = note_conversation_body(contact_id, list(ctx.config.spruce_note_member_ids), NOTE_TITLE)
        try:
            conversation_id = ctx.client.create_conversation(
                body, idempotency_key=f"relay-noteconv-{contact_id}"
            )["id"]
        except VendorError as err:
            if err.kind != ErrorKind.DUPLICATE:
                raise
            conversation_id = _find_note_conversation(ctx, contact_id)
            if conversation_id is None:
                raise RetryLater("Spruce note conversation created earlier is not listed yet") from None
    identity.remember(subscriber, spruce_note_conversation_id=conversation_id)
    ctx.progress.record(CONVERSATION, conversation_id)
    return conversation_id


def _recently_found_nothing(ctx: DeliveryContext, name: str) -> bool:
    """A read that found nothing is progress too: a delivery throttled between the read and the
    create resumes at the create, so every call it spends moves it forward. Trusted only within
    the idempotency window, where the create's key still guards against a duplicate."""
    found_nothing_ms = ctx.progress.time_of(name)
    return found_nothing_ms is not None and _now_ms() - found_nothing_ms < IDEMPOTENCY_WINDOW_MS


def _now_ms() -> int:
    return int(time.time() * 1000)


def _find_note_conversation(ctx: DeliveryContext, contact_id: str) -> str | None:
    ours = [
        c for c in ctx.client.list_contact_conversations(contact_id)
        if c.get("type") == "note" and c.get("title") == NOTE_TITLE
    ]
    return _lowest_id(ours) if ours else None


def _lowest_id(items: list[dict]) -> str:
    # Several matches: pick deterministically, as Spruce sorts structured searches by id.
    return min(item["id"] for item in items)
