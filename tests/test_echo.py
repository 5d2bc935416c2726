"""What vendors echo never leaves the process: validators quote the request in their error
messages, and none of the payload's names, emails or address reaches a log line, a Sentry
event, the stored error or the CLI's output; the vendor's error type, status and request id
do."""
from __future__ import annotations

import logging

from testbed.apps import deliveries, events, post_event, run_pending
from testbed.examples import load_fixture
from testbed.privacy import leaked
from web.cli import main
from workers.vendor_errors import Redactor

# Everything personal in the two payloads posted here.
PERSONAL = ("john.doe@email.com", "john.smith@email.com", "John Doe", "John Smith", "John", "Doe",
            "Smith", "1 Example Street", "Example Street", "Apt 2", "Springfield", "62701")


def echoing(vendor: str, method: str, path: str | None = None, path_prefix: str = "") -> dict:
    return {"vendor": vendor, "status": 400, "times": None, "method": method, "path": path,
            "path_prefix": path_prefix, "message": "invalid request", "echo": True}


def assert_clean(text: str, where: str) -> None:
    for value in PERSONAL:
        assert not leaked(value, text), f"{value!r} in {where}: {text[:2000]}"


def test_vendor_errors_quoting_the_request_leave_no_personal_data_anywhere(client, app, sandbox, sentry, caplog):
    caplog.set_level(logging.DEBUG)
    # Sprig's and Spruce's validators quote the body: the users, the contact.
    sandbox.configure(faults=[echoing("sprig", "POST", "/v2/users"), echoing("spruce", "POST", "/contacts")])
    post_event(client, load_fixture("new_referral"))
    run_pending(app)
    # Spruce's note validator quotes the note: the shipping address.
    sandbox.configure(faults=[echoing("spruce", "POST", path_prefix="/conversations/")])
    post_event(client, load_fixture("reward_redeemed"))
    run_pending(app)

    assert {d.status for d in deliveries(app) if d.destination == "spruce"} == {"failed"}
    errors = [d.last_error for d in deliveries(app) if d.status == "failed"]
    assert len(errors) == 3
    for error in errors:
        assert_clean(error, "a stored error")
        # What an operator needs stays: vendor, method, path, status, message, field names.
        assert " -> 400" in error and "invalid request" in error and "<redacted>" in error
    spruce_errors = [e for e in errors if e.startswith("spruce")]
    assert all("BAD_PARAMETER" in e and "[req " in e for e in spruce_errors)  # type and request id
    assert '"givenName":"<redacted>"' in next(e for e in errors if "POST /contacts ->" in e)

    # werkzeug's access log here is the sandbox's: it plays the vendor, which does see the data.
    assert_clean("\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug"), "the logs")
    # One report per failed delivery (this process may send other envelopes: sessions, client reports).
    assert len([sent for sent in sentry.sent if '"delivery-failed"' in sent]) == 3, sentry.sent
    assert_clean("\n".join(sentry.sent), "Sentry")

    runner = app.test_cli_runner()
    for args in (["events", "list"], ["events", "list", "--json"], ["events", "stats"],
                 *(["events", "show", str(e.id)] for e in events(app)),
                 *(["events", "show", str(e.id), "--json"] for e in events(app))):
        result = runner.invoke(main, args, env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert_clean(result.output, " ".join(args))


def test_the_redactor_keeps_what_an_operator_needs():
    redact = Redactor(["Jane Roe", "jane@example.com", "12 High St", "US"])
    text = ("givenName 'JANE ROE' invalid at 12 high st; jane@example.com, other@example.org, "
            "+1 (555) 010-2345, field status, code US [req 0E5QDGJC030000]")
    assert redact(text) == ("givenName '<redacted>' invalid at <redacted>; <redacted>, <email>, "
                            "<phone>, field status, code US [req 0E5QDGJC030000]")
