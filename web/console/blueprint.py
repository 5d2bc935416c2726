"""What every console page shares: a signed-in person (else the sign-in page), a CSRF token on
every POST, the operator role for what acts (`operator_only`), the headers that keep pages out
of caches and scripts out of pages, and errors answered as a page that names the problem."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, abort, g, redirect, render_template, request, url_for
from flask_wtf.csrf import generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException
from wtforms import ValidationError

from operations.accounts import OPERATOR, AccountView
from operations.audit import CONSOLE, Actor
from relay.runtime import Runtime
from web.console import sessions

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")

F = TypeVar("F", bound=Callable[..., Any])
BAD_TOKEN = "The form's security token is missing or expired: reload the page and try again."
# Pages a person who is not signed in may load.
PUBLIC = {"console.sign_in_page", "console.static"}
# No script at all, styles and images from Relay only, forms posted to Relay only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def runtime() -> Runtime:
    from flask import current_app

    return Runtime.of(current_app)


def account() -> AccountView:
    """The signed-in account (every page but the public ones has one)."""
    return g.account


def actor() -> Actor:
    """Who acts, as the audit log records them: the account and the client's address."""
    return Actor(account().email, CONSOLE, request.remote_addr)


def operator_only(view: F) -> F:
    """For a view that acts: a viewer gets 403 (and sees no button that leads here)."""

    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if account().role != OPERATOR:
            abort(403, "Your role (viewer) may look but not act: an operator can do this.")
        return view(*args, **kwargs)

    return checked  # type: ignore[return-value]


@bp.before_request
def _signed_in_and_checked():
    g.account = sessions.current(runtime())
    if g.account is None and request.endpoint not in PUBLIC:
        if request.method == "GET":
            return redirect(url_for("console.sign_in_page"))
        abort(403, "You are not signed in (or your session ended): sign in and try again.")
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError:
            abort(403, BAD_TOKEN)
    return None


@bp.app_template_global()
def csrf_token() -> str:
    return generate_csrf()


@bp.app_template_global()
def is_operator() -> bool:
    return g.get("account") is not None and g.account.role == OPERATOR


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.errorhandler(HTTPException)
def _error_page(exc: HTTPException):
    code = exc.code or 500
    return render_template("console/error.html", code=code, title=exc.name, message=exc.description), code
