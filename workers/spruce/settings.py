"""Spruce's settings (SPRUCE_*, RELAY_SPRUCE_NOTE_TEMPLATE*), one declaration group, declared
by Spruce's destination (workers.spruce)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relay.core_settings import own_reserves, reserve_overrides
from relay.settings import CallRate, CommaList, Parsed, Rate, Reading, Setting, SettingsGroup, Text, Url, invalid
from workers.spruce.note_template import NoteTemplate, TemplateError


@dataclass(frozen=True)
class SpruceSettings:
    api_token: str | None
    api_url: str
    note_member_ids: tuple[str, ...]
    # None: each event's own note text (workers.spruce.sends), as before templates.
    note_template: NoteTemplate | None
    rate_limit: CallRate
    reserves: dict[str, float]  # its own reserves, those set, by lane (relay.core_settings.reserve_overrides)


class Template(Parsed):
    def parse(self, text: str) -> NoteTemplate:
        try:
            return NoteTemplate.parse(text)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None


def _build(reading: Reading) -> SpruceSettings:
    inline, file_name = reading["note_template"], reading["note_template_file"]
    if inline and file_name:
        raise invalid("RELAY_SPRUCE_NOTE_TEMPLATE", "and RELAY_SPRUCE_NOTE_TEMPLATE_FILE are both set: keep one")
    values = {name: value for name, value in reading.values.items() if name != "note_template_file"}
    values["reserves"] = own_reserves(values)
    if file_name:
        values["note_template"] = _template_file(reading.instance / Path(file_name).expanduser())
    return SpruceSettings(**values)


def _template_file(path: Path) -> NoteTemplate:
    """A relative path is relative to the instance folder (RELAY_INSTANCE_PATH): every process
    of a deploy shares it, not a working directory."""
    name = "RELAY_SPRUCE_NOTE_TEMPLATE_FILE"
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")  # the file's last line break
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise invalid(name, f": cannot read {path} ({reason})") from None
    try:
        return NoteTemplate.parse(text)
    except TemplateError as exc:
        raise invalid(name, str(exc)) from None


SETTINGS = SettingsGroup(
    name="spruce",
    title="Spruce",
    configured=lambda spruce: spruce.api_token is not None,
    build=_build,
    settings=(
        Setting(
            "SPRUCE_API_TOKEN",
            "api_token",
            Text(),
            secret=True,
            doc="Spruce bearer token (base64 of `access_id:secret_key`); unset = no Spruce deliveries",
        ),
        Setting(
            "SPRUCE_API_URL", "api_url", Url(), default="https://api.sprucehealth.com/v1", doc="Spruce API base URL"
        ),
        Setting(
            "SPRUCE_NOTE_MEMBER_IDS",
            "note_member_ids",
            CommaList(),
            doc="comma-separated Spruce member ids added to note conversations",
        ),
        Setting(
            "RELAY_SPRUCE_NOTE_TEMPLATE",
            "note_template",
            Template(),
            shown_default="– (Relay's own note)",
            doc='the internal note staff read on Spruce, with `{placeholder}`s (see "What staff read"), e.g. '
            "`{event} for {subscriber_name}: {reward}`",
        ),
        Setting(
            "RELAY_SPRUCE_NOTE_TEMPLATE_FILE",
            "note_template_file",
            Text(),
            doc="the same from a UTF-8 file (for several lines), relative to `RELAY_INSTANCE_PATH` unless "
            "absolute; its last line break is dropped. Set one of the two, not both",
        ),
        Setting(
            "SPRUCE_RATE_LIMIT",
            "rate_limit",
            Rate(),
            # Spruce publishes no number: start conservative; its s-ratelimit-* headers slow Relay further.
            default="50/60s",
            doc="Spruce calls per period, per organization token; Spruce's own headers can slow it further",
        ),
        # Spruce's budget is the organization's: how much of it each lane leaves to the others.
        *reserve_overrides("spruce", "Spruce"),
    ),
)


def spruce_settings(config) -> SpruceSettings:
    """What this process's configuration read for Spruce."""
    return config.of(SETTINGS)
