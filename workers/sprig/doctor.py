"""`relay doctor`'s check of the Sprig key: one read of a user no one has."""

from __future__ import annotations

from relay.checks import NOT_CONFIGURED, Check, failed, passed
from relay.config import Config
from workers.outcomes import ErrorKind
from workers.sprig.client import SprigClient
from workers.sprig.settings import sprig_settings
from workers.vendor_errors import VendorError

CHECKS = ("Sprig key",)
# A user id no one has: Sprig answers 404 to an accepted key, 403 to any other.
PROBE_USER = "relay-doctor-probe"


def probe(config: Config, timeout_s: float) -> list[Check]:
    [name] = CHECKS
    sprig = sprig_settings(config)
    if not sprig.api_key:
        return [Check(name, NOT_CONFIGURED, "SPRIG_API_KEY is not set: nothing is delivered to Sprig")]
    with SprigClient(sprig.api_url, sprig.api_key, timeout=timeout_s) as client:
        try:
            client.get_user(PROBE_USER)
        except VendorError as err:
            if err.kind == ErrorKind.AUTH:
                return [
                    failed(
                        name,
                        f"Sprig refused SPRIG_API_KEY ({err.status})",
                        "a wrong key, or the key of the other Sprig environment (production vs "
                        "development): copy the key of the environment Relay writes to from Sprig's "
                        "Integrations → Data Import API",
                    )
                ]
            return [failed(name, str(err), "check SPRIG_API_URL and Sprig's status; then run doctor again")]
    return [passed(name, "accepted (a read of a user)")]
