"""Whether personal data shows in text the tests read (logs, errors, output)."""

from __future__ import annotations

import re


def leaked(value: str, text: str) -> bool:
    """Whether `value` appears in `text`. A number (a ZIP code) counts only on its own: inside a
    longer run of digits it is a timestamp's microseconds or an id, not the address. So does a
    code of three letters or fewer (a state, a country): `IL` inside UNAVAILABLE, or inside a
    vendor's request id such as 3IL9X, is no address."""
    if value.isdigit():
        return re.search(rf"(?<!\d){value}(?!\d)", text) is not None
    if len(value) <= 3 and value.isalpha():
        return re.search(rf"(?<![^\W_]){re.escape(value)}(?![^\W_])", text) is not None
    return value in text
