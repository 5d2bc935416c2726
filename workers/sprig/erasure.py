"""Sprig's part of an erasure request (`relay subscribers forget --purge sprig`): ask Sprig to purge
the visitor, by the userId Relay gave them and by every email of theirs."""

from __future__ import annotations

from relay.config import Config
from relay.runtime import Runtime
from workers.erasure import Person
from workers.sprig.client import sprig_client
from workers.sprig.settings import sprig_settings


def sprig_ids(person: Person, config: Config) -> tuple[list[str], list[str]]:
    """(userIds, emails) to purge: the userId Relay gave them (SPRIG_USER_ID_SOURCE), and every
    email of theirs (Sprig also purges by email)."""
    user_ids = person.emails if sprig_settings(config).user_id_source == "email" else person.ids
    return sorted(user_ids), sorted(person.emails)


def asked(person: Person, config: Config) -> dict[str, int]:
    """What a purge would ask of Sprig, counted."""
    user_ids, emails = sprig_ids(person, config)
    return {"userId": len(user_ids), "email": len(emails)}


def purge(person: Person, runtime: Runtime) -> list[str]:
    """Sprig's request id of each purge request (none when nothing of theirs is known). Raises
    VendorError or Deferred when Sprig does not take it."""
    user_ids, emails = sprig_ids(person, runtime.config)
    if not user_ids and not emails:
        return []
    return sprig_client(runtime).purge_visitors(user_ids=user_ids, emails=emails)
