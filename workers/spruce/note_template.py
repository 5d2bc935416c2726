"""The Spruce note staff read, as an operator's template (RELAY_SPRUCE_NOTE_TEMPLATE or
RELAY_SPRUCE_NOTE_TEMPLATE_FILE): literal text with `{placeholder}`s, `{{` and `}}` for braces.

Only the plain names in PLACEHOLDERS are accepted: no attribute or index lookups (`{x.y}`,
`{x[0]}`), no conversions (`{x!r}`), no format specs (`{x:>10}`), no positional fields (`{}`),
so a template can only ever insert these values. Without a template, each event's note is the
text Spruce receives for its type (workers.spruce: SpruceNote), unchanged.

The note is an internal message on Spruce (https://developer.sprucehealth.com/reference/postconversationmessage):
it is for staff and may hold the subscriber's name and shipping address. A TemplateError names the
placeholder or the syntax problem, never a value.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

# The default note is made of these: the placeholders read the payload just as it does.
from workers.spruce.sends import referral_count, reward_summary, shipping_lines, variant_text

# What each placeholder holds: the one table of them (the README shows it). Absent values are
# empty text.
PLACEHOLDERS: dict[str, str] = {
    "default": "the note Relay writes without a template, all of it",
    "summary": "its first line: `SparkLoop: reward unlocked — <reward> (after N referrals). Coupon: <code>.`",
    "event": "the event in words: `reward unlocked`, `reward redeemed`",
    "event_type": "SparkLoop's event type: `reward_unlocked`, `reward_redeemed`",
    "reward": "the reward's name, else its id, else `unnamed reward`",
    "reward_id": "the reward's SparkLoop id",
    "referrals": "how many referrals the subscriber has",
    "coupon": "the coupon code",
    "variant": "the reward variant: `name (sku)`, the name or the sku (reward_redeemed)",
    "shipping": "the shipping details, one `Label: value` line each (reward_redeemed)",
    "subscriber_name": "the subscriber's name as SparkLoop has it",
    "subscriber_id": "the subscriber's SparkLoop id",
    "campaign_id": "the SparkLoop campaign id",
}

# How each value comes from the event's type and payload ({default} is the event's own text).
_VALUES: dict[str, Callable[[str, dict], str]] = {
    "summary": lambda event_type, data: reward_summary(_in_words(event_type), data),
    "event": lambda event_type, data: _in_words(event_type),
    "event_type": lambda event_type, data: event_type,
    "reward": lambda event_type, data: _text(_reward(data).get("name") or _reward(data).get("id")) or "unnamed reward",
    "reward_id": lambda event_type, data: _text(_reward(data).get("id")),
    "referrals": lambda event_type, data: _text(referral_count(data)),
    "coupon": lambda event_type, data: _text(data.get("coupon_code")),
    "variant": lambda event_type, data: _text(variant_text(data)),
    "shipping": lambda event_type, data: "\n".join(shipping_lines(data.get("shipping_details") or {})),
    "subscriber_name": lambda event_type, data: _subscriber_name(data.get("subscriber") or {}),
    "subscriber_id": lambda event_type, data: _text((data.get("subscriber") or {}).get("id")),
    "campaign_id": lambda event_type, data: _text(data.get("campaign_id")),
}


class TemplateError(ValueError):
    """The template cannot be used; the message names the placeholder or the syntax problem."""


@dataclass(frozen=True)
class NoteTemplate:
    # (literal text, placeholder name or None), in order: parsed once, at start.
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> NoteTemplate:
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError as exc:  # "Single '}' encountered in format string", …
            raise TemplateError(f"has unbalanced braces ({exc}); write {{{{ and }}}} for literal braces") from None
        parts = []
        for literal, name, spec, conversion in fields:
            if name is not None:
                _check_placeholder(name, spec, conversion)
            parts.append((literal, name))
        if not any(name for _, name in parts) and not text.strip():
            raise TemplateError("is empty")
        return cls(tuple(parts))

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.parts if name)

    def render(self, event_type: str, data: dict, default: Callable[[dict], str]) -> str:
        """The note; `default` is the event's own text (SpruceNote.text), for {default}."""
        values = {
            name: default(data) if name == "default" else _VALUES[name](event_type, data)
            for name in set(self.placeholders)
        }
        return "".join(literal + (values[name] if name else "") for literal, name in self.parts)


def note_text(text: Callable[[dict], str], event_type: str, data: dict, template: NoteTemplate | None) -> str:
    """The note for this event: the operator's template when there is one, else the event's own
    text (SpruceNote.text), as Relay wrote it before templates existed."""
    return template.render(event_type, data, text) if template else text(data)


def _check_placeholder(name: str, spec: str | None, conversion: str | None) -> None:
    shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    if not name:
        raise TemplateError(f"has a placeholder without a name ({shown}); use one of {', '.join(PLACEHOLDERS)}")
    if name not in PLACEHOLDERS:
        raise TemplateError(f"has an unknown placeholder {shown}; use one of {', '.join(PLACEHOLDERS)}")
    if conversion or spec:
        raise TemplateError(
            f"has a placeholder {shown} with a conversion or format spec; only plain names like {{{name}}} are allowed"
        )


def _in_words(event_type: str) -> str:
    return event_type.replace("_", " ")


def _reward(data: dict) -> dict:
    return data.get("reward") or {}


def _subscriber_name(subscriber: dict) -> str:
    return " ".join(str(subscriber.get("name") or subscriber.get("first_name") or "").split())


def _text(value) -> str:
    return "" if value is None else str(value).strip()
