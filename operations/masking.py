"""Masking personal data in stored payloads before an operator's terminal shows them: every
value not under an allow-listed key (schemas.personal) is masked."""

from __future__ import annotations

from schemas.personal import NOT_PERSONAL_KEYS, map_leaves

MASK = "***"


def mask_personal_data(value):
    return map_leaves(value, _masked)


def _masked(value, key: str | None):
    if value is None or isinstance(value, bool) or key in NOT_PERSONAL_KEYS:
        return value
    if isinstance(value, str) and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}{MASK}@{domain[:1]}{MASK}"  # enough to tell two people apart
    return MASK
