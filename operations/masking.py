"""Masking personal data in stored payloads before an operator's terminal shows them: every
value not under an allow-listed key (schemas.personal) is masked."""

from __future__ import annotations

from schemas.personal import NOT_PERSONAL_KEYS

MASK = "***"


def mask_personal_data(value, key: str | None = None):
    if isinstance(value, dict):
        return {k: mask_personal_data(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_personal_data(item, key) for item in value]
    if value is None or isinstance(value, bool) or key in NOT_PERSONAL_KEYS:
        return value
    if isinstance(value, str) and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}{MASK}@{domain[:1]}{MASK}"  # enough to tell two people apart
    return MASK
