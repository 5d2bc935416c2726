"""Spruce: find or create the subscriber's contact; for a note, post an internal note for staff
into a note conversation associated with the contact. Every POST carries an idempotency key
derived from the delivery or the subject, and a 422 "duplicate" means an earlier attempt landed.

A stored id Spruce answers 404 for (staff deleted or merged the contact, or deleted the
conversation; a deleted contact takes its conversations with it) is replaced within the same
run, once per kind: found first, created only when none is found, under a key of its own
(Spruce keeps a key 24 h, and the one that made the deleted record would get a 422)."""

from __future__ import annotations

import hashlib
import logging
import time

from schemas.sparkloop import Subscriber
from workers.context import DeliveryContext
from workers.outcomes import DeliveryFailed, ErrorKind, RetryLater
from workers.spruce import CONTACT_ID, NOTE_CONVERSATION_ID, NOTE_FIRST_ATTEMPT
from workers.spruce.client import SpruceClient
from workers.spruce.note_template import note_text
from workers.spruce.sends import (
    SpruceContact,
    SpruceNote,
    contact_body,
    note_conversation_body,
    note_message_body,
)
from workers.spruce.settings import spruce_settings
from workers.vendor_errors import VendorError

NOTE_TITLE = "SparkLoop referrals"
# Spruce keeps idempotency keys for 24 h; an hour's margin for clocks and slow attempts.
IDEMPOTENCY_WINDOW_MS = 23 * 3600 * 1000
# Finished steps (Progress.steps) and the times later attempts rely on (Progress.times).
CONTACT, CONVERSATION, NOTE = "spruce.contact", "spruce.conversation", "spruce.note"
CONTACT_SEARCH_EMPTY = "spruce.contact.search_empty"
CONVERSATION_LIST_EMPTY = "spruce.conversation.list_empty"
# The ids Spruce answered 404 for (Progress.steps): never used again by this delivery, and part
# of the key that makes their replacement, so that every attempt at it sends the same key.
STALE = {CONTACT: "spruce.contact.stale", CONVERSATION: "spruce.conversation.stale"}
KIND = {CONTACT: "contact", CONVERSATION: "note conversation"}

log = logging.getLogger("relay.spruce")


def deliver(ctx: DeliveryContext[SpruceClient], sends: SpruceContact | SpruceNote) -> None:
    subscriber = _subject(ctx)
    stale = _Stale(ctx)
    try:
        while True:  # bounded: each kind of id is replaced at most once per run (_Stale.forget)
            contact_id = _contact(ctx, subscriber)
            if not isinstance(sends, SpruceNote):
                break
            try:
                conversation_id = _note_conversation(ctx, subscriber, contact_id)
            except VendorError as err:
                stale.forget(CONTACT, contact_id, err)
                continue
            text = note_text(sends.text, ctx.event_type, ctx.data, spruce_settings(ctx.config).note_template)
            try:
                _post_note(ctx, conversation_id, text)
                break
            except VendorError as err:
                stale.forget(CONVERSATION, conversation_id, err)
        stale.replaced_all = True
    finally:
        stale.report()


class _Stale:
    """The stored ids Spruce answered 404 for in this run."""

    def __init__(self, ctx: DeliveryContext[SpruceClient]):
        self.ctx, self.replaced_all = ctx, False
        self.kinds: list[str] = []

    def forget(self, kind: str, stored_id: str, err: VendorError) -> None:
        """Re-raises `err` unless it is a 404; else `stored_id` (a `kind`) is never used again
        by this delivery, so that the caller finds or creates it again."""
        if err.status != 404:
            raise err
        if kind in self.kinds:
            raise DeliveryFailed(
                f"the Spruce {KIND[kind]} found or created in place of a stored one Spruce no longer has "
                f"is not found either: {err}"
            ) from None
        self.kinds.append(kind)
        progress = self.ctx.progress
        if kind == CONTACT:
            # Its conversations went with it; and the search must run again, not be skipped.
            if progress.result(CONVERSATION):
                progress.record(STALE[CONVERSATION], progress.result(CONVERSATION))
            progress.forget(CONTACT_SEARCH_EMPTY)
        progress.record(STALE[kind], stored_id)
        progress.forget(CONVERSATION_LIST_EMPTY)

    def report(self) -> None:
        """One line a run, naming the delivery and the kinds of id, never the person."""
        if not self.kinds:
            return
        kinds = sorted(KIND[kind] for kind in self.kinds)  # "contact" before "note conversation"
        what = " and ".join(kinds) + (" ids" if len(kinds) > 1 else " id")
        then = (
            "found or created again"
            if self.replaced_all
            else "finding or creating it again did not finish in this run (see the delivery's error)"
        )
        log.warning(
            "delivery %s: Spruce no longer has the stored %s (404): forgotten, %s",
            self.ctx.delivery_id,
            what,
            then,
            extra={"delivery_id": self.ctx.delivery_id, "stale_ids": kinds},
        )


def _post_note(ctx: DeliveryContext[SpruceClient], conversation_id: str, text: str) -> None:
    progress = ctx.progress
    if progress.done(NOTE):
        return
    first_attempt_ms = progress.time_of(NOTE_FIRST_ATTEMPT)
    if first_attempt_ms is None:
        progress.mark(NOTE_FIRST_ATTEMPT, _now_ms())
    elif _now_ms() - first_attempt_ms > IDEMPOTENCY_WINDOW_MS and _note_already_posted(ctx, conversation_id, text):
        # Spruce has forgotten our key by now, and the note was posted before: not again.
        progress.record(NOTE, "found-in-conversation")
        return
    try:
        # Spruce scopes keys by path: in a conversation that replaced a deleted one, the same
        # key is a first use.
        request_id = ctx.client.post_message(
            conversation_id,
            note_message_body(text),
            idempotency_key=f"relay-note-{ctx.delivery_id}",
        )
    except VendorError as err:
        if err.kind != ErrorKind.DUPLICATE:
            raise
        request_id = "accepted-earlier"  # Spruce does not replay the first response
    progress.record(NOTE, request_id)


def _note_already_posted(ctx: DeliveryContext[SpruceClient], conversation_id: str, text: str) -> bool:
    return any(
        item.get("isInternalNote") and item.get("text") == text
        for item in ctx.client.iter_conversation_items(conversation_id, order="newest_first")
    )


def _subject(ctx: DeliveryContext[SpruceClient]) -> Subscriber:
    """The person the event is about: the first its spec names (schemas.sparkloop.PeopleAt)."""
    subscriber = ctx.subscribers[0][1] if ctx.subscribers else None
    if subscriber is None or not subscriber.email:
        raise DeliveryFailed("payload has no subscriber email to find the Spruce contact by")
    return subscriber


def _email(subscriber: Subscriber) -> str:
    """The contact's email (_subject lets no subscriber without one through)."""
    if not subscriber.email:
        raise DeliveryFailed("payload has no subscriber email to find the Spruce contact by")
    return subscriber.email


def _find_or_create_contact(ctx: DeliveryContext[SpruceClient], subscriber: Subscriber, replaces: str | None) -> str:
    email = _email(subscriber)
    if not _recently_found_nothing(ctx, CONTACT_SEARCH_EMPTY):
        found = ctx.client.search_contacts_by_email(email)
        if found:
            return _lowest_id(found)
        ctx.progress.mark(CONTACT_SEARCH_EMPTY, _now_ms())
    email_hash = hashlib.sha256(email.encode()).hexdigest()
    try:
        return ctx.client.create_contact(
            contact_body(subscriber), idempotency_key=_replacing(f"relay-contact-{email_hash}", replaces)
        )["id"]
    except VendorError as err:
        if err.kind != ErrorKind.DUPLICATE:
            raise
    found = ctx.client.search_contacts_by_email(email)
    if found:
        return _lowest_id(found)
    raise RetryLater("Spruce contact created by an earlier attempt is not searchable yet")


def _contact(ctx: DeliveryContext[SpruceClient], subscriber: Subscriber) -> str:
    progress, stale = ctx.progress, ctx.progress.result(STALE[CONTACT])
    if progress.done(CONTACT) and progress.result(CONTACT) != stale:
        return progress.result(CONTACT)
    contact_id = ctx.recall(subscriber).get(CONTACT_ID)
    if contact_id is None or contact_id == stale:
        contact_id = _find_or_create_contact(ctx, subscriber, replaces=stale)
        # A new contact starts without the old one's note conversation.
        forgotten = {NOTE_CONVERSATION_ID: None} if stale else {}
        ctx.remember(subscriber, **{CONTACT_ID: contact_id}, **forgotten)
    progress.record(CONTACT, contact_id)
    return contact_id


def _note_conversation(ctx: DeliveryContext[SpruceClient], subscriber: Subscriber, contact_id: str) -> str:
    progress, stale = ctx.progress, ctx.progress.result(STALE[CONVERSATION])
    if progress.done(CONVERSATION) and progress.result(CONVERSATION) != stale:
        return progress.result(CONVERSATION)
    remembered = ctx.recall(subscriber)
    conversation_id = remembered.get(NOTE_CONVERSATION_ID) if remembered.get(CONTACT_ID) == contact_id else None
    if conversation_id == stale:
        conversation_id = None
    if conversation_id is None and not _recently_found_nothing(ctx, CONVERSATION_LIST_EMPTY):
        conversation_id = _find_note_conversation(ctx, contact_id)
        if conversation_id is None:
            ctx.progress.mark(CONVERSATION_LIST_EMPTY, _now_ms())
    if conversation_id is None:
        body = note_conversation_body(contact_id, list(spruce_settings(ctx.config).note_member_ids), NOTE_TITLE)
        try:
            conversation_id = ctx.client.create_conversation(
                body, idempotency_key=_replacing(f"relay-noteconv-{contact_id}", stale)
            )["id"]
        except VendorError as err:
            if err.kind != ErrorKind.DUPLICATE:
                raise
            conversation_id = _find_note_conversation(ctx, contact_id)
            if conversation_id is None:
                raise RetryLater("Spruce note conversation created earlier is not listed yet") from None
    ctx.remember(subscriber, **{NOTE_CONVERSATION_ID: conversation_id})
    progress.record(CONVERSATION, conversation_id)
    return conversation_id


def _replacing(key: str, stale_id: str | None) -> str:
    """The key that makes a record; one of its own for a record that replaces a deleted one."""
    return f"{key}-replacing-{stale_id}" if stale_id else key


def _recently_found_nothing(ctx: DeliveryContext[SpruceClient], name: str) -> bool:
    """A read that found nothing is progress too: a delivery throttled between the read and the
    create resumes at the create, so every call it spends moves it forward. Trusted only within
    the idempotency window, where the create's key still guards against a duplicate."""
    found_nothing_ms = ctx.progress.time_of(name)
    return found_nothing_ms is not None and _now_ms() - found_nothing_ms < IDEMPOTENCY_WINDOW_MS


def _now_ms() -> int:
    return int(time.time() * 1000)


def _find_note_conversation(ctx: DeliveryContext[SpruceClient], contact_id: str) -> str | None:
    ours = [
        c
        for c in ctx.client.list_contact_conversations(contact_id)
        if c.get("type") == "note" and c.get("title") == NOTE_TITLE
    ]
    return _lowest_id(ours) if ours else None


def _lowest_id(items: list[dict]) -> str:
    # Several matches: pick deterministically, as Spruce sorts structured searches by id.
    return min(item["id"] for item in items)
