"""What a destination's delivery code gets to work with (DeliveryContext, Progress); what each
destination declares is relay.destinations.Destination."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from relay.config import Config
from relay.runtime import Runtime
from schemas.sparkloop import People, Subscriber
from workers import identity
from workers.run_store import RunStore
from workers.vendor_http import VendorClient

ClientT = TypeVar("ClientT", bound=VendorClient)  # a destination's own client class


class Progress:
    """A delivery's finished steps (with what each produced) and the times later attempts rely
    on, each saved at once so a retry resumes after the last finished step."""

    def __init__(self, steps: dict, times: dict, save: Callable[[dict, dict], None]):
        self.steps, self.times, self._save = dict(steps), dict(times), save

    def done(self, step: str) -> bool:
        return step in self.steps

    def result(self, step: str):
        return self.steps.get(step)

    def record(self, step: str, result=True, *more_steps: str) -> None:
        """`step` (and `more_steps`, finished by the same call) is done: saved at once."""
        self.steps[step] = result
        self.steps.update(dict.fromkeys(more_steps, True))
        self._save(dict(self.steps), dict(self.times))

    def time_of(self, name: str) -> int | None:
        return self.times.get(name)

    def mark(self, name: str, at_ms: int) -> None:
        self.times[name] = at_ms
        self._save(dict(self.steps), dict(self.times))

    def forget(self, name: str) -> None:
        if self.times.pop(name, None) is not None:
            self._save(dict(self.steps), dict(self.times))


@dataclass
class DeliveryContext(Generic[ClientT]):
    """A run's view for its destination's code. Saves (the progress, the identity map) are
    written with the run's next write: before its next vendor call (the client's view flushes
    them) or in the transaction that records its end. A worker that dies between a call's
    answer and the next call loses nothing that saving at once would have kept."""

    destination: str
    delivery_id: int
    event_id: int
    event_type: str
    data: dict
    subscribers: People
    received_at_ms: int
    runtime: Runtime
    client: ClientT  # this destination's client, paced for this run
    progress: Progress
    store: RunStore  # the run's statements, on the connection it holds
    _links: dict[str, identity.Link] = field(default_factory=dict)  # what this run read or saved

    @property
    def config(self) -> Config:
        return self.runtime.config

    def recall(self, subscriber: Subscriber) -> dict:
        """What this destination remembers of the subscriber (workers.identity)."""
        return dict(self._link(subscriber).data)

    def remember(self, subscriber: Subscriber, **values) -> None:
        """Save `values` among what this destination remembers of the subscriber; a None forgets."""
        link = self._link(subscriber).with_values(values)
        self._links[link.key] = link
        self.store.later(("link", link.key), *link.write(self.destination, self.store.dialect))

    def _link(self, subscriber: Subscriber) -> identity.Link:
        # The run holds the subscriber's lock for this destination: no one else writes the row.
        key = identity.subscriber_key(subscriber, self.config.lookup_key)
        if key not in self._links:
            self._links[key] = self.store.read(
                lambda connection: identity.find(connection, self.config.lookup_key, self.destination, subscriber)
            )
        return self._links[key]
