"""Failures: failed deliveries grouped by cause, and replaying a group."""

from __future__ import annotations

from flask import render_template

from web.console.blueprint import bp


@bp.get("/failures")
def failures():
    return render_template("console/failures.html")
