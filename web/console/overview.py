"""Overview: each destination's health at a glance."""

from __future__ import annotations

from flask import render_template

from web.console.blueprint import bp


@bp.get("/")
def overview():
    return render_template("console/overview.html")
