"""Which payload values are personal data: an allow-list, not a deny-list. SparkLoop adds
fields without notice, and an unknown field is more likely to be personal than not, so only
values under these keys (identifiers, codes, counts, flags, statuses, dates) count as not
personal. The CLI masks the rest; the vendor clients remove it from what vendors echo back."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

# Shapes of contact details in free text (vendors' messages, log lines, Sentry events), for
# what no allow-list or known value can catch. An email also URL-encoded; seven or more
# digits with separators: a phone number, or a number that might be one.
EMAIL = re.compile(r"[^\s@<>\"'(),;:/?=&\[\]]+(?:@|%40)[^\s@<>\"'(),;:/?=&\[\]]+", re.IGNORECASE)
PHONE = re.compile(r"(?<!\w)\+?\d(?:[\s().-]*\d){6,}(?!\w)")

NOT_PERSONAL_KEYS = frozenset(
    {
        "type",
        "id",
        "uuid",
        "campaign_id",
        "offer_id",
        "referral_code",
        "ref_code",
        "referrer_code",
        "referred",
        "referral_status",
        "tot_referrals",
        "next_reward",
        "referrals",
        "recurring",
        "created_at",
        "origin",
        "coupon_code",
        "reward_variant_name",
        "reward_variant_sku",
        "status",
    }
)


def without_contact_details(text: str) -> str:
    """`text` with every email and phone number replaced by `<email>`, `<phone>`."""
    return PHONE.sub("<phone>", EMAIL.sub("<email>", text))


def leaves(value, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    """Every value in a JSON document that is not an object or an array, with the key it sits
    under (an array's items under the array's key)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, k if isinstance(k, str) else None)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from leaves(item, key)
    else:
        yield key, value


def map_leaves(value, change: Callable[[Any, str | None], Any], key: str | None = None):
    """A copy of a JSON document with `change(value, key)` applied to every value that is not
    an object or an array (keys and structure kept; a tuple becomes a list, as JSON has it)."""
    if isinstance(value, dict):
        return {k: map_leaves(v, change, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [map_leaves(item, change, key) for item in value]
    return change(value, key)


def personal_strings(value) -> set[str]:
    """Every string in `value` that is not under an allow-listed key."""
    return {v for k, v in leaves(value) if isinstance(v, str) and k not in NOT_PERSONAL_KEYS}
