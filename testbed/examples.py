"""SparkLoop's example webhooks, one file per event type, from the sandbox's fixtures."""

from __future__ import annotations

import json

from sandbox import FIXTURES
from schemas.events import EVENTS

# An example of every event type, one file each (reward_unlocked has two shapes; the folder's
# README says which SparkLoop documents and which are built from its documented fields), and
# the types SparkLoop publishes no complete example of: their schemas require only `type`.
FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
WITHOUT_EXAMPLE = sorted(
    name
    for name, spec in EVENTS.items()
    if [key for key, field in spec.schema.fields.items() if field.required] == ["type"]
)


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())
