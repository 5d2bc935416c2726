"""Which payload values are personal data: an allow-list, not a deny-list. SparkLoop adds
fields without notice, and an unknown field is more likely to be personal than not, so only
values under these keys (identifiers, codes, counts, flags, statuses, dates) count as not
personal. The CLI masks the rest; the vendor clients remove it from what vendors echo back."""

from __future__ import annotations

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


def personal_strings(value, key: str | None = None) -> set[str]:
    """Every string in `value` that is not under an allow-listed key."""
    if isinstance(value, dict):
        return set().union(*(personal_strings(v, k) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(personal_strings(item, key) for item in value))
    if isinstance(value, str) and key not in NOT_PERSONAL_KEYS:
        return {value}
    return set()
