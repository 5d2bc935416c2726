"""Console sessions: the signed cookie (Flask's) carries a random session id and the CSRF
token; the session itself lives in Redis under that id, shared by every web process, for
RELAY_CONSOLE_IDLE after the last request. So a session ends on the server: on sign-out (its
key deleted), after idle time (its key expired), and when its account is removed or changes
password or role (operations.accounts.signed_in compares the account's session_version).

Written here rather than taken from Flask-Session: that package replaces the whole session with
a server-side one, where this needs only a key per signed-in person beside Flask's own cookie."""

from __future__ import annotations

import json
import secrets
from typing import cast

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

from operations.accounts import AccountView, signed_in
from relay.runtime import Runtime

_KEY = "relay:console:session:"


class ConsoleSessionInterface(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        # Secure when the page was served over https (the router's X-Forwarded-Proto, ProxyFix).
        return request.is_secure


def start(runtime: Runtime, account: AccountView) -> None:
    """Sign this browser in to `account`: a new session id (never the one it had before)."""
    session.clear()
    sid = secrets.token_urlsafe(32)
    record = json.dumps({"account": account.id, "version": account.session_version})
    runtime.redis.set(_KEY + sid, record, ex=_idle_s(runtime))
    session["sid"] = sid


def current(runtime: Runtime) -> AccountView | None:
    """The account this browser is signed in to, its idle time restarted; None when signed out."""
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    raw = cast("bytes | None", runtime.redis.get(_KEY + sid))  # redis-py types async results too
    if raw is None:
        return None
    record = json.loads(raw)
    account = signed_in(runtime, record["account"], record["version"])
    if account is None:
        runtime.redis.delete(_KEY + sid)
        return None
    runtime.redis.expire(_KEY + sid, _idle_s(runtime))
    return account


def end(runtime: Runtime) -> None:
    sid = session.get("sid")
    if isinstance(sid, str):
        runtime.redis.delete(_KEY + sid)
    session.clear()


def _idle_s(runtime: Runtime) -> int:
    return max(int(runtime.config.console_idle_s), 1)
