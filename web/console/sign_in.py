"""Signing in and out (operations.sign_in counts failures and audits each try)."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from operations.sign_in import TooManyFailures, sign_in, sign_out
from web.console import sessions
from web.console.blueprint import actor, bp, runtime


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in_page():
    if request.method == "GET":
        if sessions.current(runtime()) is not None:
            return redirect(url_for("console.overview"))
        return render_template("console/sign_in.html", email="", problem=None)
    email = request.form.get("email", "")
    try:
        account = sign_in(runtime(), email, request.form.get("password", ""), request.remote_addr)
    except TooManyFailures as exc:
        page = render_template("console/sign_in.html", email="", problem=str(exc).capitalize() + ".")
        return page, 429, {"Retry-After": str(exc.retry_after_s)}
    if account is None:
        return render_template("console/sign_in.html", email="", problem="Wrong email or password."), 401
    sessions.start(runtime(), account)
    return redirect(url_for("console.overview"))


@bp.post("/sign-out")
def sign_out_page():
    sign_out(runtime(), actor())
    sessions.end(runtime())
    return redirect(url_for("console.sign_in_page"))
