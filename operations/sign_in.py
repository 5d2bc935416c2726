"""Signing in to the console, and out: the password checked (operations.accounts), failures
counted per account and per address in Redis, shared by every web process, and each outcome
audited. After MAX_FAILURES failures for an account or an address within FAILURE_WINDOW_S,
further tries are refused unchecked until the window ends.

The audit log names the account for a sign-in that reached one, and never what was typed into
the email field otherwise: a mistyped field can hold a password or a subscriber's address."""

from __future__ import annotations

import hashlib
from typing import cast

from operations import audit
from operations.accounts import AccountView, authenticate, find_account
from operations.audit import Actor
from relay.runtime import Runtime

MAX_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60
UNKNOWN = "unknown account"
_KEY = "relay:console:sign-in-failures:"


class TooManyFailures(Exception):
    """Sign-in refused unchecked: too many failures lately; `retry_after_s` until one more try."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after_s // 60 + 1} minutes")
        self.retry_after_s = retry_after_s


def sign_in(runtime: Runtime, email: str, password: str, address: str | None) -> AccountView | None:
    """The account these credentials sign in to, or None (a wrong email or password: which is
    not said). Raises TooManyFailures when this account or address failed too often lately."""
    counters = _counters(email, address)
    # redis-py types async results too
    waits = [cast(int, runtime.redis.ttl(key)) for key in counters if _failures(runtime, key) >= MAX_FAILURES]
    if waits:
        _refused(runtime, email, address, "too many failed sign-ins")
        raise TooManyFailures(max(max(waits), 1))
    account = authenticate(runtime, email, password)
    if account is None:
        with runtime.redis.pipeline() as pipe:
            for key in counters:
                pipe.set(key, 0, ex=FAILURE_WINDOW_S, nx=True)
                pipe.incr(key)
            pipe.execute()
        _refused(runtime, email, address, "wrong email or password")
        return None
    runtime.redis.delete(counters[0])
    audit.record(runtime, Actor(account.email, audit.CONSOLE, address), "console.sign-in")
    return account


def sign_out(runtime: Runtime, actor: Actor) -> None:
    audit.record(runtime, actor, "console.sign-out")


def _failures(runtime: Runtime, key: str) -> int:
    return int(cast("bytes | None", runtime.redis.get(key)) or 0)


def _counters(email: str, address: str | None) -> list[str]:
    typed = (email or "").strip().lower().encode()
    return [_KEY + "account:" + hashlib.sha256(typed).hexdigest(), _KEY + "address:" + (address or "unknown")]


def _refused(runtime: Runtime, email: str, address: str | None, reason: str) -> None:
    """Audit a refused sign-in under the account it named, if it names one; else UNKNOWN, never
    the text typed."""
    account = find_account(runtime, email)
    actor = Actor(account.email if account is not None else UNKNOWN, audit.CONSOLE, address)
    audit.record(runtime, actor, "console.sign-in", outcome=audit.REFUSED, reason=reason)
