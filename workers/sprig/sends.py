"""What Sprig receives: `POST /v2/users` upserts one user with attributes and events.

Contract: https://docs.sprig.com/reference/sprig-api/v2/post-user-v2-1 (and the OpenAPI
document Sprig publishes at https://docs.sprig.com/reference/sprig-api.json).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from marshmallow import Schema, fields, validate

from schemas.sparkloop import Subscriber

MAX_ATTRIBUTE_VALUES = 100
# What becomes Sprig's userId (SPRIG_USER_ID_SOURCE).
USER_ID_SOURCES = ("email", "subscriber_id")
# Every attribute Relay can set, without its prefix: the names SPRIG_ATTRIBUTES may list. An
# event type's extra_attributes that adds one adds it here too.
ATTRIBUTES = (
    "subscriber_id",
    "referral_code",
    "referral_link",
    "total_referrals",
    "next_reward",
    "referred",
    "referral_status",
    "campaign_id",
    "last_reward",
    "last_reward_name",
    "coupon",
)
# SPRIG_ATTRIBUTE_PREFIX's default; the Sprig event's name keeps `sparkloop_` whatever it is.
DEFAULT_ATTRIBUTE_PREFIX = "sparkloop_"


def no_extra_attributes(data: dict, role: str) -> dict:
    return {}


def reward_attributes(data: dict, role: str) -> dict:
    """Only the subscriber who unlocked or redeemed the reward gets it."""
    if role != "subscriber":
        return {}
    reward = data.get("reward") or {}
    return {"last_reward": reward.get("id"), "last_reward_name": reward.get("name"), "coupon": data.get("coupon_code")}


@dataclass(frozen=True)
class SprigUser:
    """Each subscriber the event is about is upserted: the subscriber's referral attributes,
    `extra_attributes(data, role)` for this event type, and one event `sparkloop_<type>`."""

    extra_attributes: Callable[[dict, str], dict] = field(default=no_extra_attributes)


class SprigEventSchema(Schema):
    event = fields.String(required=True, validate=validate.Length(min=1))
    timestamp = fields.Integer(required=True, strict=True)  # Unix milliseconds


class SprigUserSchema(Schema):
    userId = fields.String(required=True, validate=validate.Length(min=1))
    emailAddress = fields.Email()
    # Flat, string-valued: the OpenAPI types attribute values as strings.
    attributes = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(),
        validate=validate.Length(max=MAX_ATTRIBUTE_VALUES),
    )
    events = fields.List(fields.Nested(SprigEventSchema))


# One instance for every body: a schema is built by deep-copying its declared fields.
SPRIG_USER = SprigUserSchema()


def sprig_user_body(
    sends: SprigUser,
    event_type: str,
    data: dict,
    subscriber: Subscriber,
    role: str,
    received_at_ms: int,
    user_id_source: str = "email",
    attributes: frozenset[str] | None = None,
    attribute_prefix: str = DEFAULT_ATTRIBUTE_PREFIX,
) -> dict:
    """The upsert for one subscriber of the event: its attributes named `attribute_prefix` +
    name, only those in `attributes` when given (SPRIG_ATTRIBUTES; None: all). Raises
    ValueError (naming fields, never values) when the user id is missing or the body would not
    satisfy Sprig's schema."""
    body: dict[str, object] = {"userId": _user_id(subscriber, user_id_source)}
    if subscriber.email:
        body["emailAddress"] = subscriber.email
    values = _subscriber_values(data, subscriber) | sends.extra_attributes(data, role)
    body["attributes"] = {
        f"{attribute_prefix}{name}": _as_string(value)
        for name, value in values.items()
        if value not in (None, "") and (attributes is None or name in attributes)
    }
    body["events"] = [{"event": f"sparkloop_{event_type}", "timestamp": received_at_ms}]
    errors = SPRIG_USER.validate(body)
    if errors:
        raise ValueError(f"Sprig user body is invalid: {errors}")
    return body


def _user_id(subscriber: Subscriber, source: str) -> str:
    if source == "email":
        if not subscriber.email:
            raise ValueError("subscriber email is missing (needed as the Sprig userId)")
        return subscriber.email
    if source == "subscriber_id":
        if not subscriber.id:
            raise ValueError("subscriber id is missing (needed as the Sprig userId)")
        return subscriber.id
    raise ValueError(f"unknown user_id_source {source!r}; expected one of {USER_ID_SOURCES}")


def _subscriber_values(data: dict, subscriber: Subscriber) -> dict:
    return {
        "subscriber_id": subscriber.id,
        "referral_code": subscriber.referral_code,
        "referral_link": subscriber.referral_link,
        "total_referrals": subscriber.tot_referrals,
        "next_reward": subscriber.next_reward,
        "referred": subscriber.referred,
        "referral_status": subscriber.referral_status,
        "campaign_id": data.get("campaign_id") or (data.get("campaign") or {}).get("id"),
    }


def _as_string(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
