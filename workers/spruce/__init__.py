"""Spruce as a destination: the subscriber's contact, and for notes the note conversation and
one internal note."""

from schemas.spruce import SpruceNote
from workers.context import Destination
from workers.spruce.client import spruce_client
from workers.spruce.delivery import NOTE_FIRST_ATTEMPT, deliver

DESTINATION = Destination(
    name="spruce",
    client=spruce_client,
    deliver=deliver,
    # Search and create the contact; for a note also list and create the note conversation,
    # and post the note.
    most_calls=lambda sends, subscribers: 5 if isinstance(sends, SpruceNote) else 2,
    # Without it, a note older than Spruce's key window would be posted again instead of
    # being looked for first.
    kept_on_force=(NOTE_FIRST_ATTEMPT,),
)
