"""`relay doctor`'s checks of the Spruce token (a read of the organization) and of the note
members (every SPRUCE_NOTE_MEMBER_IDS is an unsuspended member)."""

from __future__ import annotations

from relay.checks import NOT_CONFIGURED, SKIPPED, Check, failed, passed, warned
from relay.config import Config
from workers.outcomes import ErrorKind
from workers.spruce.organization import SpruceOrganizationClient
from workers.spruce.settings import spruce_settings
from workers.vendor_errors import VendorError

CHECKS = ("Spruce token", "Spruce note members")


def probe(config: Config, timeout_s: float) -> list[Check]:
    token, members = CHECKS
    spruce = spruce_settings(config)
    if not spruce.api_token:
        return [
            Check(token, NOT_CONFIGURED, "SPRUCE_API_TOKEN is not set: nothing is delivered to Spruce"),
            Check(members, NOT_CONFIGURED, "no Spruce token"),
        ]
    with SpruceOrganizationClient(spruce.api_url, spruce.api_token, timeout=timeout_s) as client:
        try:
            organization = client.organization()
        except VendorError as err:
            return [_failure(token, err), Check(members, SKIPPED, "the token was not accepted")]
        first = passed(token, f"accepted (organization {organization.get('id', '?')})")
        wanted = spruce.note_member_ids
        if not wanted:
            return [
                first,
                warned(
                    members,
                    "SPRUCE_NOTE_MEMBER_IDS is not set: each note is visible to its creator (Relay's API user) only",
                    "set SPRUCE_NOTE_MEMBER_IDS to the teammates or teams (entity_…) who should read the notes",
                ),
            ]
        try:
            listed = {m.get("id"): m for m in client.members() if isinstance(m, dict)}
        except VendorError as err:
            return [first, _failure(members, err)]
    strangers = [m for m in wanted if m not in listed]
    suspended = [m for m in wanted if listed.get(m, {}).get("isSuspended") is True]
    if strangers:
        return [
            first,
            failed(
                members,
                f"not members of the organization: {', '.join(strangers)}",
                "fix SPRUCE_NOTE_MEMBER_IDS: teammate or team ids (entity_…) from GET /organization/members",
            ),
        ]
    if suspended:
        return [
            first,
            failed(
                members,
                f"suspended teammates, who get no new messages: {', '.join(suspended)}",
                "remove them from SPRUCE_NOTE_MEMBER_IDS, or unsuspend them in Spruce",
            ),
        ]
    return [first, passed(members, f"all {len(wanted)} are members of the organization")]


def _failure(name: str, err: VendorError) -> Check:
    if err.kind == ErrorKind.AUTH:
        return failed(
            name,
            f"Spruce refused SPRUCE_API_TOKEN ({err.status})",
            "generate credentials under Spruce's Settings → API Access; the token is base64(access_id:secret_key)",
        )
    return failed(name, str(err), "check SPRUCE_API_URL and Spruce's status; then run doctor again")
