"""What a delivery handler gets to work with, and the two outcomes it may raise itself."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from web.config import Config
from workers import clients


class DeliveryFailed(Exception):
    """Permanent: retrying cannot help (e.g. the payload names no subscriber). Message has no PII."""


class RetryLater(Exception):
    """Transient condition found by Relay itself (e.g. a created contact not yet searchable)."""


@dataclass
class DeliveryContext:
    delivery_id: int
    event_id: int
    event_type: str
    data: dict
    received_at_ms: int
    config: Config
    steps: dict = field(default_factory=dict)
    save_steps: Callable[[dict], None] = lambda steps: None

    def done(self, step: str) -> bool:
        return step in self.steps

    def record(self, step: str, value=True) -> None:
        """Persist a finished step at once, so a retry resumes after it."""
        self.steps[step] = value
        self.save_steps(dict(self.steps))

    @property
    def sprig(self):
        return clients.sprig_client(self.config)

    @property
    def spruce(self):
        return clients.spruce_client(self.config)
