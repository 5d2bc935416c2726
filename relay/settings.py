"""Declared settings: each environment variable once, with its default, its meaning, whether it is
secret and how it is checked. Configuration reads the declarations; `.env.example`, `app.json`
and the README's configuration table are made from them (relay.settings_docs).

A `SettingsGroup` is what a part of Relay (or a destination's plug-in folder) declares: its
settings and how their values become the object it reads (`Config.of(group)`). Reading is
marshmallow's: each group is loaded as a marshmallow schema whose field names are the variables,
so every error names its variable and all bad variables are reported at once.

Why marshmallow itself rather than environs or pydantic-settings: marshmallow is already a
dependency (the webhook schemas) and is the library environs is built on; what environs adds is
a reader of `os.environ` and of `.env`, and neither fits. Relay reads a mapping it is handed
(tests, `create_app(environ)`), which environs' reader can only be made to do by overriding a
private method; and Relay's rule that an empty value is no value (its default) would need a
wrapper around every environs call. `.env` itself stays python-dotenv's, read by
relay.config.load_env_file with those rules. pydantic-settings would bring pydantic, a second
way of declaring and checking types beside marshmallow.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import marshmallow as ma

from relay.durations import EXAMPLES as DURATION_EXAMPLES
from relay.durations import parse_duration

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class CallRate:
    """A configured pace: `limit` calls per `period_s` seconds, e.g. SPRIG_RATE_LIMIT=1000/300s."""

    limit: int
    period_s: float

    @property
    def interval_s(self) -> float:
        return self.period_s / self.limit


@dataclass(frozen=True)
class Setting:
    """One environment variable: how its value is checked and what it becomes (`field`, whose
    error messages follow the variable's name: "must be …"), and what the documentation says."""

    name: str
    attribute: str  # the value's name in what the group builds
    field: ma.fields.Field
    doc: str  # the meaning, in the README's Markdown; .env.example and app.json get it plain
    default: str | None = None  # the value when unset, written as an operator would write it
    shown_default: str | None = None  # the README's "Default" when `default` cannot say it
    secret: bool = False  # a credential: never echoed in an error message; app.json may generate one
    # app.json's entry beyond what the above says: {"required": True}, {"value": "none"} (None: no
    # value), {"generator": "secret"}; None: not in app.json (an add-on or the platform sets it).
    heroku: Mapping[str, Any] | None = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Reading:
    """What a group's `build` gets: its values by attribute, the instance folder (where relative
    paths point) and the environment that was read."""

    values: dict[str, Any]
    instance: Path
    environ: Mapping[str, str]

    def __getitem__(self, attribute: str) -> Any:
        return self.values[attribute]


@dataclass(frozen=True)
class SettingsGroup(Generic[T]):
    """Settings declared together: `name` finds the built object (`Config.of`), `title` heads the
    group in `.env.example`. A destination's group says when it is `configured` (its
    credentials are set); Relay plans no deliveries to one that is not."""

    name: str
    title: str
    settings: tuple[Setting, ...]
    build: Callable[[Reading], T] | None  # None: documented here, read elsewhere (the platform's)
    configured: Callable[[T], bool] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(setting.name for setting in self.settings)


def invalid(name: str, message: str) -> ConfigError:
    """A ConfigError for a group's own checks (those that need several variables or files)."""
    return ConfigError(_sentence(name, message))


def read_groups(groups: Sequence[SettingsGroup[Any]], environ: Mapping[str, str], instance: Path) -> dict[str, Any]:
    """Each readable group's built object by group name. An empty (or blank) variable is an unset
    one: its default applies. Raises ConfigError naming every bad variable."""
    problems: list[str] = []
    built: dict[str, Any] = {}
    for group in groups:
        if group.build is None:
            continue
        try:
            values = _load(group, environ)
            built[group.name] = group.build(Reading(values, instance, environ))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return built


def _load(group: SettingsGroup[Any], environ: Mapping[str, str]) -> dict[str, Any]:
    given = {}
    for setting in group.settings:
        value = (environ.get(setting.name) or "").strip() or setting.default
        if value is not None:
            given[setting.name] = value
    try:
        return _schema(group).load(given)
    except ma.ValidationError as exc:
        messages = exc.normalized_messages()
        raise ConfigError(
            "; ".join(
                _sentence(setting.name, _shown(setting, given.get(setting.name), message))
                for setting in group.settings
                for message in _flat(messages.get(setting.name, ()))
            )
        ) from None


def _schema(group: SettingsGroup[Any]) -> ma.Schema:
    fields = {}
    for setting in group.settings:
        bound = copy.deepcopy(setting.field)
        bound.data_key = setting.name
        if bound.load_default is ma.missing:
            bound.load_default = None
        fields[setting.attribute] = bound
    return ma.Schema.from_dict(fields, name=f"{group.name.title()}Settings")()


def _flat(messages: Any) -> Iterable[str]:
    if isinstance(messages, str):
        yield messages
    elif isinstance(messages, dict):
        for nested in messages.values():
            yield from _flat(nested)
    else:
        for nested in messages:
            yield from _flat(nested)


def _shown(setting: Setting, value: str | None, message: str) -> str:
    # A check may quote what it got; a credential's value never leaves this function.
    if setting.secret and value and value in message:
        return "is not valid (the value is a secret: not shown)"
    return message


def _sentence(name: str, message: str) -> str:
    return f"{name}{'' if message[:1] in (':', '[') else ' '}{message}"


# --- the kinds of value ------------------------------------------------------------------------
# Each field's messages read after the variable's name: "RELAY_RETRY_BASE_S must be …".


class Parsed(ma.fields.Field):
    """A field whose text goes through `parse`; a ValueError's text is the message."""

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return self.parse(str(value))
        except ValueError as exc:
            raise ma.ValidationError(str(exc)) from None


class Text(ma.fields.String):
    """Any text (the reader strips it)."""


class Whole(ma.fields.Integer):
    """A whole number, `minimum` or more."""

    def __init__(self, minimum: int = 1, **kwargs: Any) -> None:
        if minimum == 1:
            rule = "must be greater than zero (got {input})"
            bad = "must be a whole number (got {input!r})"
        else:
            rule = bad = f"must be a whole number, {minimum} or more (got {{input!r}})"
        kwargs.setdefault("validate", ma.validate.Range(min=minimum, error=rule))
        super().__init__(strict=False, error_messages={"invalid": bad, "too_large": bad}, **kwargs)


class Fraction(Parsed):
    """A number from 0 to 1."""

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be a number from 0 to 1 (got {text!r})")
        return value


class Choice(Parsed):
    """One of `choices`."""

    def __init__(self, choices: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = tuple(choices)

    def parse(self, text: str) -> str:
        if text not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)} (got {text!r})")
        return text


class Duration(Parsed):
    """Seconds, written as relay.durations reads them everywhere: 90s, 30m, 2h, 7d, 2w."""

    def parse(self, text: str) -> float:
        try:
            return parse_duration(text)
        except ValueError:
            raise ValueError(f"must be a duration like {DURATION_EXAMPLES} (got {text!r})") from None


class Rate(Parsed):
    """Calls per period: 1000/300s."""

    def parse(self, text: str) -> CallRate:
        count, _, period = text.partition("/")
        try:
            seconds = parse_duration(period)
        except ValueError:
            seconds = None
        if not count.strip().isdigit() or int(count) <= 0 or seconds is None:
            raise ValueError(f"must look like 1000/300s: calls per period (got {text!r})")
        return CallRate(int(count), seconds)


class Url(Parsed):
    """A URL with one of `schemes` and a host; the message never repeats it (it may hold a
    password)."""

    def __init__(self, schemes: Sequence[str] = ("http", "https"), *, base: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schemes, self.base = tuple(schemes), base

    def parse(self, text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in self.schemes or not parts.hostname:
            allowed = ", ".join(f"{scheme}://" for scheme in self.schemes)
            raise ValueError(f"must be a URL starting with {allowed} and naming a host")
        if self.base and (parts.query or parts.fragment or parts.username or parts.password):
            raise ValueError(
                "must be a base URL without credentials, query or fragment, e.g. https://relay.example.com"
            )
        return text.rstrip("/") if parts.scheme.startswith("http") else text


class CommaList(Parsed):
    """Comma-separated items, blanks dropped; unset: none. `check` vets each item."""

    def __init__(self, check: Callable[[int, str], None] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("load_default", ())
        super().__init__(**kwargs)
        self.check = check

    def parse(self, text: str) -> tuple[str, ...]:
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        for position, item in enumerate(items, start=1):
            if self.check is not None:
                self.check(position, item)
        return items


class Json(Parsed):
    """A JSON document."""

    def parse(self, text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be a JSON object: {exc.msg}") from None
