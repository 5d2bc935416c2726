"""A drill's webhooks: SparkLoop's reward events, each for another subscriber, posted at a
steady pace from a thread (to the web app in this process, or over HTTP to gunicorn), posted
again when the web fails, as SparkLoop retries, and sent more than once on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from testbed.apps import TOKEN, post_event
from testbed.examples import load_fixture


def reward_event(event_type: str, n: int) -> dict:
    """The fixture's reward event for subscriber number `n`: another person, so another event."""
    payload = load_fixture(event_type)
    payload["subscriber"].update(
        id=f"sub_drill{n}",
        email=f"drill{n}@example.com",
        referral_code=f"drill{n:04d}",
        referral_link=f"https://mywebsite.com?rh_ref=drill{n:04d}",
    )
    return payload


def referral_event(n: int) -> dict:
    """The fixture's new_referral for subscriber number `n` (and a referrer of their own): two
    Spruce calls when the subscriber is new (search, create the contact)."""
    payload = load_fixture("new_referral")
    payload["subscriber"].update(id=f"sub_live{n}", email=f"live{n}@example.com", referral_code=f"live{n:04d}")
    payload["referrer"].update(id=f"sub_referrer{n}", email=f"referrer{n}@example.com", referral_code=f"ref{n:04d}")
    return payload


def post_all(app, payloads: list[dict]) -> None:
    client = app.test_client()
    for payload in payloads:
        assert post_event(client, payload).status_code == 200


def through_app(app) -> Callable[[dict], int | None]:
    """Post to the web app in this process (Flask's test client)."""
    client = app.test_client()
    return lambda payload: post_event(client, payload).status_code


def over_http(url: Callable[[], str]) -> Callable[[dict], int | None]:
    """Post over HTTP to whichever web `url()` names now (the router's choice); None when the
    connection fails."""
    http = httpx.Client(timeout=10)

    def post(payload: dict) -> int | None:
        try:
            return http.post(
                f"{url()}/webhooks/sparkloop", json=payload, headers={"SparkLoop-Token": TOKEN}
            ).status_code
        except httpx.TransportError:
            return None

    return post


@dataclass
class Stream:
    """Webhooks posted from a thread, `per_second` distinct ones a second; a failed post (a 5xx:
    the store down; no answer: the web restarting) is posted again after half a second, as
    SparkLoop retries. With `copies` > 1 SparkLoop sends every webhook that many times: every
    `at_once`-th one with all its copies at the same moment (each from a thread of its own), the
    others once now and again `later_s` seconds later each (by then the first copy's deliveries
    may be under way, or done)."""

    post: Callable[[dict], int | None]
    payloads: list[dict]
    per_second: float
    copies: int = 1
    at_once: int = 2
    later_s: tuple[float, ...] = (1.0, 5.0)
    answers: list[int] = field(default_factory=list)  # every answer, retried ones too
    accepted: list[dict] = field(default_factory=list)  # a webhook for every 200 it got
    retried: int = 0

    def __post_init__(self):
        assert len(self.later_s) >= self.copies - 1, "a delay for every copy posted later"
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._post_all, daemon=True, name="webhooks")
        self.thread.start()

    def _post_all(self) -> None:
        later: list[tuple[float, int, dict]] = []  # (when, order, payload): copies posted later
        for n, payload in enumerate(self.payloads):
            started = time.monotonic()
            later = self._post_due(later, started)
            if self.copies > 1 and n % self.at_once == 0:
                self._post_at_once(payload)
            else:
                self._post_one(payload)
                later += [(started + delay, n, payload) for delay in self.later_s[: self.copies - 1]]
            time.sleep(max(0.0, 1 / self.per_second - (time.monotonic() - started)))
        while later:
            time.sleep(max(0.0, min(later)[0] - time.monotonic()))
            later = self._post_due(later, time.monotonic())

    def _post_due(self, later: list[tuple[float, int, dict]], now: float) -> list[tuple[float, int, dict]]:
        for _, _, payload in sorted(entry for entry in later if entry[0] <= now):
            self._post_one(payload)
        return [entry for entry in later if entry[0] > now]

    def _post_at_once(self, payload: dict) -> None:
        start = threading.Barrier(self.copies)

        def post() -> None:
            start.wait(timeout=10)
            self._post_one(payload)

        threads = [threading.Thread(target=post, daemon=True) for _ in range(self.copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)

    def _post_one(self, payload: dict) -> None:
        for _ in range(240):  # SparkLoop's retries, bounded
            status = self.post(payload)
            with self._lock:
                if status is not None:
                    self.answers.append(status)
                    if status == 200:
                        self.accepted.append(payload)
                    if status < 500:
                        return
                self.retried += 1
            time.sleep(0.5)

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the webhook stream did not finish"
