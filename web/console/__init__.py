"""The console: Relay's pages for people, under /console/, server-rendered from the Jinja2
templates beside this module (autoescaped), with a stylesheet and no script. Off unless
RELAY_CONSOLE_SECRET_KEY is set. Each page reads and acts through operations/, as the `relay`
command does; this package only parses the request, calls an operation and renders.

blueprint.py holds what every page shares (sign-in required, roles, CSRF, headers); each page
is a module of its own, imported here so that its routes join the blueprint."""

from __future__ import annotations

from flask import Flask


def register_console(app: Flask) -> bool:
    """Serve the console if RELAY_CONSOLE_SECRET_KEY is set; whether it is served."""
    config = app.config["RELAY"]
    if not config.console_secret_key:
        return False
    # Imported here: an intake without the console loads none of the operations.
    from flask_wtf.csrf import CSRFProtect

    from web.console import audit_log, events, failures, overview, sign_in  # noqa: F401  (their routes)
    from web.console.blueprint import bp
    from web.console.sessions import ConsoleSessionInterface

    app.secret_key = config.console_secret_key
    app.config.update(
        SESSION_COOKIE_NAME="relay_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The blueprint checks every POST itself (the webhooks are not forms); a token lives as
        # long as the session that holds it.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.session_interface = ConsoleSessionInterface()
    CSRFProtect(app)
    app.register_blueprint(bp)
    return True
