"""Stand-ins for the alert sinks (workers.alerts): a loopback HTTP endpoint that keeps what it
is posted (the alert webhook's receiver, or Slack's incoming webhook), answering as told; and
Sentry captured in this process."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from werkzeug.wrappers import Request, Response

from relay.config import Config
from relay.observability import init_sentry
from testbed.sentry import SentryCapture, sentry_off
from testbed.waiting import wait_for

# A Standard Webhooks secret: whsec_ and the base64 of 32 bytes.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


@dataclass(frozen=True)
class Posted:
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float  # when it was answered (time.monotonic())

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class RecordingSink:
    """A WSGI app keeping every POST. It answers `answers` in turn (then 200), each after
    `delay_s`; `posted` holds every request, `taken` those it answered with a 2xx."""

    def __init__(self, answers: Iterable[int] = (), delay_s: float = 0.0):
        self._answers, self.delay_s = list(answers), delay_s
        self._lock = threading.Lock()
        self.posted: list[Posted] = []

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            status = self._answers.pop(0) if self._answers else 200
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.posted.append(Posted(headers, body, status, time.monotonic()))
        return Response("ok" if status < 400 else "no", status=status)(environ, start_response)

    @property
    def taken(self) -> list[Posted]:
        with self._lock:
            return [post for post in self.posted if post.answered < 300]

    def wait_for_taken(self, count: int, timeout: float = 15.0) -> bool:
        return wait_for(lambda: len(self.taken) >= count, timeout=timeout, interval=0.05)


@contextmanager
def sentry_captured(config: Config) -> Iterator[SentryCapture]:
    """Sentry started as a process with SENTRY_DSN starts it, sending into a SentryCapture."""
    capture = SentryCapture()
    init_sentry(dataclasses.replace(config, sentry_dsn="http://key@127.0.0.1:9/1"), transport=capture)
    try:
        yield capture
    finally:
        sentry_off()
