"""`relay doctor`'s check of the Ledger token: one read of the account it belongs to."""

from __future__ import annotations

from relay.checks import NOT_CONFIGURED, Check, failed, passed
from testbed.third_destination import NAME, SETTINGS
from testbed.third_destination.client import LedgerClient
from workers.outcomes import ErrorKind
from workers.vendor_errors import VendorError


def probe(config, timeout_s: float) -> list[Check]:
    name = "Ledger token"
    if NAME not in config.configured_destinations:
        return [Check(name, NOT_CONFIGURED, "LEDGER_TOKEN is not set: nothing is delivered to Ledger")]
    own = config.of(SETTINGS)
    with LedgerClient(own.url, own.token, timeout=timeout_s) as client:
        try:
            account = client.whoami()
        except VendorError as err:
            if err.kind == ErrorKind.AUTH:
                return [failed(name, f"Ledger refused LEDGER_TOKEN ({err.status})", "copy the token from Ledger")]
            return [failed(name, str(err), "check LEDGER_URL; then run doctor again")]
    return [passed(name, f"accepted (account {account.get('account', '?')})")]
