"""The `relay` command in a test process, through Flask's CLI runner on a test app."""

from __future__ import annotations

from web.cli import main


def invoke(app, *args, input=None):
    return app.test_cli_runner().invoke(main, list(args), input=input, catch_exceptions=False)
