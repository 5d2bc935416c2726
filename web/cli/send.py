"""`relay send TYPE`: post an example SparkLoop webhook to a Relay, as SparkLoop would.

The example is TYPE's file in sandbox/fixtures/sparkloop/ with a new subscriber each run (new
ids, referral code and `+tag@example.com` emails, a new reward id and coupon), so that two sends
are two events, not a duplicate; `--set` pins fields, `--file` posts a body unchanged. The token
is the one this configuration's web process accepts. The output names people by SparkLoop id
only, and never shows the token.
"""

from __future__ import annotations

import difflib
import json
import secrets
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import httpx
from flask import current_app
from flask.cli import with_appcontext

from relay.config import DEV_WEBHOOK_TOKEN
from schemas.events import EVENTS

WEBHOOK_PATH = "/webhooks/sparkloop"
# `relay dev`'s webhook, whatever RELAY_PUBLIC_URL says: a test event reaches Sprig and
# Spruce (the practice's records), so another Relay is only ever named with --to.
DEV_URL = f"http://127.0.0.1:5000{WEBHOOK_PATH}"
# The objects that describe a person in SparkLoop's payloads (schemas.sparkloop).
PEOPLE = ("subscriber", "referrer", "lead", "referral")
TIMEOUT_S = 10.0
MAX_BODY_SHOWN = 500
_ID_CHARACTERS = string.ascii_lowercase + string.digits
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SendError(click.ClickException):
    """Bad input: one line and exit code 2, before anything is sent."""

    exit_code = 2


class Refused(click.ClickException):
    """Sent, or tried to, and not accepted: exit code 1."""

    exit_code = 1


def examples() -> Path:
    # Imported here, as `relay dev` does: no other relay command loads the sandbox.
    from sandbox import FIXTURES

    return FIXTURES


def example_names() -> list[str]:
    return sorted(path.stem for path in examples().glob("*.json"))


def fresh_example(name: str) -> dict:
    """The example `name` (an event type, or an example's file name such as
    reward_unlocked__legacy) as a new subscriber's event."""
    payload = json.loads((examples() / f"{name}.json").read_text(encoding="utf-8"))
    tag = secrets.token_hex(4)
    for key in PEOPLE:
        if isinstance(payload.get(key), dict):
            _freshen_person(payload[key], tag)
    if isinstance(payload.get("email"), str):
        payload["email"] = _fresh_email(payload["email"], tag)
    if isinstance(payload.get("reward"), dict) and isinstance(payload["reward"].get("id"), str):
        payload["reward"]["id"] = _fresh_id(payload["reward"]["id"])
    if isinstance(payload.get("coupon_code"), str):
        payload["coupon_code"] = _random(len(payload["coupon_code"]))
    return payload


def _freshen_person(person: dict, tag: str) -> None:
    if isinstance(person.get("id"), str):
        person["id"] = _fresh_id(person["id"])
    if isinstance(person.get("email"), str):
        person["email"] = _fresh_email(person["email"], tag)
    code = person.get("referral_code")
    if isinstance(code, str) and code:
        person["referral_code"] = secrets.token_hex(len(code))[: len(code)]
        if isinstance(person.get("referral_link"), str):
            person["referral_link"] = person["referral_link"].replace(code, person["referral_code"])


def _fresh_id(example: str) -> str:
    """sub_hjdgc74u -> sub_ and 8 new characters: the example's prefix and length."""
    prefix, _, rest = example.rpartition("_")
    return f"{prefix}_{_random(len(rest) or 8)}" if prefix else _random(len(example) or 8)


def _fresh_email(example: str, tag: str) -> str:
    local = example.split("@", 1)[0].split("+", 1)[0] or "someone"
    return f"{local}+{tag}@example.com"


def _random(length: int) -> str:
    return "".join(secrets.choice(_ID_CHARACTERS) for _ in range(length))


def _paths(value, prefix: str = "") -> list[str]:
    if not isinstance(value, dict):
        return [prefix] if prefix else []
    found = [prefix] if prefix else []
    for key, child in value.items():
        found += _paths(child, f"{prefix}.{key}" if prefix else key)
    return found


def apply_set(payload: dict, assignment: str) -> None:
    """`--set subscriber.email=VALUE`: the path must be one the example has; the value keeps
    the field's kind: text for a text field, JSON (a number, true, null, an object) otherwise."""
    path, equals, text = assignment.partition("=")
    if not equals or not path.strip():
        raise SendError(f"--set {assignment!r}: write PATH=VALUE, e.g. --set subscriber.email=ann@example.com")
    keys = path.strip().split(".")
    parent: Any = payload
    for key in keys[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or keys[-1] not in parent:
        close = difflib.get_close_matches(path.strip(), _paths(payload), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SendError(f"--set {path.strip()}: the {payload.get('type')} example has no such field{hint}")
    if isinstance(parent[keys[-1]], str):
        parent[keys[-1]] = text
        return
    try:
        parent[keys[-1]] = json.loads(text)
    except ValueError:
        raise SendError(
            f"--set {path.strip()}: not a text field; give its value as JSON (a number, true, false, null, an object)"
        ) from None


def webhook_url(given: str | None) -> str:
    """--to: Relay's base URL (the webhook path is added) or its webhook URL."""
    if given is None:
        return DEV_URL
    parts = urlsplit(given.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SendError(f"--to must be an http:// or https:// URL, e.g. {DEV_URL}")
    path = parts.path.rstrip("/")
    if not path.endswith(WEBHOOK_PATH):
        path += WEBHOOK_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def shown(url: str) -> str:
    """The URL without credentials or query (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def token_for(url: str) -> str:
    tokens = current_app.config["RELAY"].webhook_tokens
    if tokens:
        return tokens[0]
    if urlsplit(url).hostname in _LOOPBACK:
        return DEV_WEBHOOK_TOKEN  # `relay dev` sets it when SPARKLOOP_WEBHOOK_TOKEN is unset
    raise SendError(f"SPARKLOOP_WEBHOOK_TOKEN is not set: the Relay at {shown(url)} needs its token")


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SendError(f"--file {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None


def _type_in(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload.get("type") if isinstance(payload, dict) and isinstance(payload.get("type"), str) else None


def who(payload: dict) -> str:
    """`subscriber sub_…, referrer sub_…`: ids only, never an email or a name."""
    named = [
        f"{key} {payload[key]['id']}" if isinstance(payload[key].get("id"), str) else f"{key} without an id"
        for key in PEOPLE
        if isinstance(payload.get(key), dict)
    ]
    return ", ".join(named)


def answer_text(response: httpx.Response, token: str) -> str:
    if response.is_redirect and response.headers.get("location"):
        text = f"redirected to {shown(response.headers['location'])}"
    else:
        try:
            text = json.dumps(response.json(), ensure_ascii=False, separators=(", ", ": "))
        except ValueError:
            text = " ".join(response.text.split())
    text = text.replace(token, "<token>") if token else text
    return text if len(text) <= MAX_BODY_SHOWN else text[:MAX_BODY_SHOWN] + "…"


def post(url: str, body: bytes, token: str) -> httpx.Response:
    headers = {"SparkLoop-Token": token, "Content-Type": "application/json"}
    try:
        return httpx.post(url, content=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.ConnectError:
        hint = " (is `relay dev` running? --to names another Relay)" if url == DEV_URL else ""
        raise Refused(f"cannot reach {shown(url)}: connection refused{hint}") from None
    except httpx.TimeoutException:
        raise Refused(f"{shown(url)} did not answer within {TIMEOUT_S:g} s") from None
    except httpx.HTTPError as exc:
        raise Refused(f"cannot post to {shown(url)} ({type(exc).__name__})") from None


@click.command("send")
@click.argument("event_type", metavar="[TYPE]", required=False)
@click.option("--to", "to", metavar="URL", help=f"Relay's base URL or webhook URL (default: relay dev's, {DEV_URL}).")
@click.option(
    "--set",
    "assignments",
    metavar="PATH=VALUE",
    multiple=True,
    help="Pin a field of the example, e.g. --set subscriber.email=ann@example.com (repeatable).",
)
@click.option(
    "--file", "file", metavar="PAYLOAD.json", help="Post this body as it is (no new ids); TYPE may be left out."
)
@with_appcontext
def send_command(event_type: str | None, to: str | None, assignments: tuple[str, ...], file: str | None):
    """Post an example SparkLoop webhook of TYPE, as SparkLoop would, and print the answer.

    TYPE is an event type (or an example's name, e.g. reward_unlocked__legacy, the older
    shape). Each run is a new subscriber (new ids and email), so two sends are two events;
    --set pins a field. The token is SPARKLOOP_WEBHOOK_TOKEN's (relay dev's when unset).
    """
    url = webhook_url(to)
    names = example_names()
    if file is not None:
        if assignments:
            raise SendError("--set and --file exclude each other: --file posts the body as it is")
        body = read_file(file)
        described = _type_in(body)
        if event_type is not None and described not in (event_type, None):
            raise SendError(f"--file {file} holds a {described} event, not {event_type}")
        event_type, people = described or event_type or "(no type)", None
    else:
        if event_type is None:
            raise SendError(f"say which event to send: one of {', '.join(sorted(EVENTS))}")
        if event_type not in names:
            raise SendError(
                f"no example of {event_type!r}: TYPE is one of {', '.join(sorted(EVENTS))} (or give --file)"
            )
        payload = fresh_example(event_type)
        for assignment in assignments:
            apply_set(payload, assignment)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        event_type, people = payload["type"], who(payload)
    token = token_for(url)
    response = post(url, body, token)
    status = f"{response.status_code} {response.reason_phrase}".strip()
    if not response.is_success:
        raise Refused(f"{status} from {shown(url)}: {answer_text(response, token)}")
    click.echo(f"{status} from {shown(url)}: {event_type} sent" + (f" ({people})" if people else ""))
