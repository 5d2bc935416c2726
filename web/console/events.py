"""Events: search and filter events, and one event with every attempt."""

from __future__ import annotations

from flask import render_template

from web.console.blueprint import bp


@bp.get("/events")
def events():
    return render_template("console/events.html")
