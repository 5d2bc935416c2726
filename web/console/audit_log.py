"""Audit log: who did what, newest first."""

from __future__ import annotations

from flask import render_template

from web.console.blueprint import bp


@bp.get("/audit")
def audit_log():
    return render_template("console/audit_log.html")
