"""Sending alerts (operations.alerts decides which): the sinks and the task that sends one alert
to one sink, retried with backoff, so a slow or failing sink never holds up the evaluation, a
delivery or another sink.

Sinks: the alert webhook (RELAY_ALERT_WEBHOOK_URL: JSON signed per the Standard Webhooks spec
with RELAY_ALERT_WEBHOOK_SECRET, by the `standardwebhooks` package), Slack (RELAY_ALERT_SLACK_URL,
an incoming webhook: one line and a link to the console), and Sentry (a message, when
SENTRY_DSN is set). An alert carries ids, counts, states, status codes, vendor request ids and
console links only: what operations.alerts puts in it; nothing here adds to it, and no error
message here quotes a sink's URL (a credential) or its answer's body.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from celery import Celery, shared_task
from standardwebhooks.webhooks import Webhook

from relay.config import Config
from relay.observability import report
from relay.queue import CATCH_UP_QUEUE, SEND_ALERT_TASK
from relay.runtime import Runtime

log = logging.getLogger("relay.alerts")

WEBHOOK, SLACK, SENTRY = "webhook", "slack", "sentry"
SINK_TITLES = {WEBHOOK: "alert webhook", SLACK: "Slack", SENTRY: "Sentry"}
OPENED, REPEAT, RESOLVED, TEST = "opened", "repeat", "resolved", "test"
SINK_TIMEOUT_S = 5.0
# Celery's autoretry: a wait of up to 1, 2, 4 … s (jitter draws below it), at most 10 min, for
# about 40 min in all before the alert is given up (logged, counted).
RETRY_BACKOFF_S = 1
RETRY_BACKOFF_MAX_S = 600
MAX_RETRIES = 12
# Answers a second try cannot change: the sink refused the request itself (a wrong URL, a
# revoked Slack webhook), apart from a timeout or a rate limit.
RETRIED_4XX = (408, 425, 429)
SLACK_MARKS = {
    OPENED: ":red_circle:",
    REPEAT: ":large_orange_circle:",
    RESOLVED: ":large_green_circle:",
    TEST: ":wrench:",
}
SLACK_WORDS = {OPENED: "Relay alert", REPEAT: "Relay alert, still", RESOLVED: "Relay resolved", TEST: "Relay test"}


@dataclass(frozen=True)
class Alert:
    """One alert as every sink gets it (plain data: it travels as a task's JSON argument)."""

    id: str  # the same for every try and sink: Standard Webhooks' `webhook-id`
    type: str  # the condition: breaker, daily_budget, backlog_age, failure_group, sweep, test
    status: str  # OPENED, REPEAT, RESOLVED or TEST
    subject: str  # what it is about: a destination's name, a failure group's digest, or relay
    summary: str  # one readable line
    at: str  # when it was decided (ISO 8601, UTC)
    since: str  # when the condition began
    level: int = 0  # a daily budget's share used (50, 80, 90, 100); 0 elsewhere
    facts: dict[str, Any] = field(default_factory=dict)  # ids, counts, states, status codes
    console_url: str | None = None  # the console page that shows it (RELAY_PUBLIC_URL set)

    @property
    def key(self) -> str:
        return f"{self.type}:{self.subject}"


class SinkError(Exception):
    """A sink did not take the alert; the message is what an operator may read (a status, an
    error's class), never the URL or the answer's body."""


class SinkUnavailable(SinkError):
    """Worth another try later: no answer, a 5xx, a timeout, a rate limit."""


def console_url(config: Config, page: str) -> str | None:
    """A console page's address, when the console is on and RELAY_PUBLIC_URL says where it is."""
    if not (config.public_url and config.console_secret_key):
        return None
    return config.public_url + page


def webhook_body(alert: Alert) -> dict[str, Any]:
    """The Standard Webhooks payload shape: `type`, `timestamp` and `data`."""
    return {"type": f"relay.alert.{alert.type}.{alert.status}", "timestamp": alert.at, "data": asdict(alert)}


def slack_body(alert: Alert) -> dict[str, Any]:
    """One line: what happened, and the console page when there is one (Slack's `<url|text>`)."""
    line = f"{SLACK_MARKS[alert.status]} {SLACK_WORDS[alert.status]}: {_slack_escape(alert.summary)}"
    if alert.console_url:
        line += f" <{_slack_escape(alert.console_url)}|open the console>"
    return {"text": line}


def send(config: Config, alert: Alert, sink: str, *, client: httpx.Client | None = None) -> str:
    """Send `alert` to `sink` now; what the sink answered, as a short text. SinkError if it did
    not take it (SinkUnavailable: try again later)."""
    if sink == SENTRY:
        level: Literal["info", "warning"] = "info" if alert.status in (RESOLVED, TEST) else "warning"
        tags = {"alert": alert.type, "alert_status": alert.status, "alert_subject": alert.subject}
        fingerprint = ["relay-alert", alert.key, "resolved" if alert.status == RESOLVED else "on"]
        report(f"Relay alert: {alert.summary}", level=level, tags=tags, fingerprint=fingerprint)
        return "handed to the Sentry client"
    if sink == WEBHOOK:
        assert config.alert_webhook_url and config.alert_webhook_secret  # Config.alert_sinks says so
        body = json.dumps(webhook_body(alert), separators=(",", ":")).encode()
        signed_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": alert.id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": Webhook(config.alert_webhook_secret).sign(alert.id, signed_at, body),
        }
        return _post(client, config.alert_webhook_url, body, headers)
    if sink == SLACK:
        assert config.alert_slack_url
        body = json.dumps(slack_body(alert)).encode()
        return _post(client, config.alert_slack_url, body, {"content-type": "application/json"})
    raise ValueError(f"no alert sink is called {sink!r}")


def _post(client: httpx.Client | None, url: str, body: bytes, headers: dict[str, str]) -> str:
    headers = {**headers, "user-agent": "Relay alerts"}
    try:
        if client is None:
            answer = httpx.post(url, content=body, headers=headers, timeout=SINK_TIMEOUT_S)
        else:
            answer = client.post(url, content=body, headers=headers, timeout=SINK_TIMEOUT_S)
    except httpx.HTTPError as exc:  # its text may hold the URL
        raise SinkUnavailable(f"no answer ({type(exc).__name__})") from None
    if answer.is_success:
        return f"HTTP {answer.status_code}"
    if answer.status_code >= 500 or answer.status_code in RETRIED_4XX:
        raise SinkUnavailable(f"HTTP {answer.status_code}")
    raise SinkError(f"HTTP {answer.status_code}")


def _slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def publish(celery_app: Celery, alerts: list[Alert], sinks: tuple[str, ...]) -> int:
    """A send task per alert and sink, on the catch-up queue; how many were published (a broker
    that refuses one is logged: the alert is lost, as the evaluation that decided it is done)."""
    published = 0
    for alert in alerts:
        for sink in sinks:
            try:
                celery_app.send_task(SEND_ALERT_TASK, args=[asdict(alert), sink], queue=CATCH_UP_QUEUE, retry=False)
            except Exception as exc:  # any broker failure: kombu raises several unrelated types
                log.warning("alert %s for %s not published (%s)", alert.id, sink, type(exc).__name__)
                continue
            published += 1
    return published


def record_sent(runtime: Runtime, alert: Alert, sink: str, answer: str) -> None:
    runtime.metrics.count("relay_alerts_sent_total", type=alert.type, status=alert.status, sink=sink)
    log.info(
        "alert %s sent to %s (%s): %s %s",
        alert.id,
        sink,
        answer,
        alert.key,
        alert.status,
        extra={"alert": alert.type, "alert_status": alert.status, "sink": sink},
    )


@shared_task(
    bind=True,
    name=SEND_ALERT_TASK,
    autoretry_for=(SinkUnavailable,),
    retry_backoff=RETRY_BACKOFF_S,
    retry_backoff_max=RETRY_BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def send_alert(self, alert: dict[str, Any], sink: str) -> None:
    """One alert to one sink; a sink that is away gets it later (Celery's autoretry)."""
    runtime: Runtime = self.app.runtime  # relay.queue.RelayCelery's: the process's runtime
    decided = Alert(**alert)
    try:
        answer = send(runtime.config, decided, sink)
    except SinkError as exc:
        runtime.metrics.count("relay_alert_send_failures_total", sink=sink)
        retried = isinstance(exc, SinkUnavailable) and self.request.retries < MAX_RETRIES
        log.warning(
            "alert %s not sent to %s (try %d): %s%s",
            decided.id,
            sink,
            self.request.retries + 1,
            exc,
            "; trying again later" if retried else "; given up",
            extra={"alert": decided.type, "alert_status": decided.status, "sink": sink},
        )
        raise
    record_sent(runtime, decided, sink, answer)
