"""Masking personal data in stored payloads before an operator's terminal shows them.

An allow-list, not a deny-list: SparkLoop adds fields without notice, and an unknown field is
more likely to be personal than not. Only identifiers, counts, flags and dates pass through.
"""
from __future__ import annotations

SHOWN_KEYS = frozenset({
    "type", "id", "uuid", "campaign_id", "offer_id", "referral_code", "ref_code", "referrer_code",
    "referred", "referral_status", "tot_referrals", "next_reward", "referrals", "recurring",
    "created_at", "origin", "coupon_code", "reward_variant_name", "reward_variant_sku", "status",
})
MASK = "***"


def mask_personal_data(value, key: str | None = None):
    if isinstance(value, dict):
        return {k: mask_personal_data(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_personal_data(item, key) for item in value]
    if value is None or isinstance(value, bool) or key in SHOWN_KEYS:
        return value
    if isinstance(value, str) and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}{MASK}@{domain[:1]}{MASK}"  # enough to tell two people apart
    return MASK
