"""Sprig as a destination: one `POST /v2/users` per subscriber the event is about."""

from workers.context import Destination
from workers.sprig.client import sprig_client
from workers.sprig.delivery import upsert_subscribers

DESTINATION = Destination(
    name="sprig",
    client=sprig_client,
    deliver=upsert_subscribers,
    most_calls=lambda sends, subscribers: max(subscribers, 1),
)
