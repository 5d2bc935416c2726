"""`relay doctor`, through Flask's CLI runner against the real database (SQLite and PostgreSQL),
real Redis and the sandbox's vendors over HTTP."""
from __future__ import annotations

import json
import time

import httpx
import pytest
import redis
from flask.cli import ScriptInfo

from cryptography.fernet import Fernet

from relay.runtime import Runtime
from relay.sealing import key_id
from sandbox import SandboxSettings
from sandbox.spruce import MEMBERS
import operations.doctor
from relay.app import create_base_app
from testbed.apps import TOKEN, post_event, sandbox_state
from testbed.examples import load_fixture
from testbed.exchanges import Exchange
from testbed.vendor_contracts import DOCUMENTS, problems
from testbed.waiting import wait_for
from web import create_app
from web.cli import main
from workers.spruce.organization import MEMBERS_PAGE_SIZE
from workers.retention import LAST_RUN, run_retention
from workers.sweep import LAST_SWEPT, sweep_and_check_in

PUBLIC_URL = "https://relay.example.com"
SETTINGS = SandboxSettings()
SECRETS = (SETTINGS.sprig_api_key, SETTINGS.spruce_api_token, SETTINGS.sparkloop_api_key, TOKEN)
TEAMMATE, TEAM = MEMBERS[0]["id"], MEMBERS[3]["id"]
SUSPENDED = next(m["id"] for m in MEMBERS if m.get("isSuspended"))
# For tests whose subject is not the store (or that bring their own).
ONE_STORE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CHECKS = ["configuration", "database", "payload keys", "broker", "Sprig key", "Spruce token", "Spruce note members",
          "SparkLoop key", "SparkLoop webhook", "sweep (beat)", "retention"]


def doctor(app, *args: str, obj: ScriptInfo | None = None):
    """`relay doctor` on `app`, or on what `obj` builds (the app the command loads itself)."""
    loads = {"obj": obj} if obj is not None else {}
    result = app.test_cli_runner().invoke(main, ["doctor", *args], env={"COLUMNS": "250"}, **loads)
    assert "Traceback" not in result.output, result.output
    assert not any(secret in result.output for secret in SECRETS), "a credential in the output"
    return result


def report(app, **kwargs) -> tuple[int, dict[str, dict]]:
    result = doctor(app, "--json", **kwargs)
    body = json.loads(result.output)
    assert [c["name"] for c in body["checks"]] == CHECKS
    assert body["ok"] is (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in body["checks"]}


def statuses(checks: dict[str, dict]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def swept(app) -> None:
    """One sweep as beat runs it, and its daily retention run."""
    with app.app_context():
        sweep_and_check_in(Runtime.of(app))
        run_retention(Runtime.of(app))


def register(app) -> None:
    result = app.test_cli_runner().invoke(main, ["sparkloop", "webhooks", "register"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def healthy(relay_app):
    """A deploy where every check passes (Relay's webhook registered, a sweep and a retention run
    just done), then
    the app of that deploy with some variables changed."""
    def build(**overrides: str):
        good = {"RELAY_PUBLIC_URL": PUBLIC_URL, "SPRUCE_NOTE_MEMBER_IDS": f"{TEAMMATE},{TEAM}"}
        app = relay_app(**good)
        register(app)
        swept(app)
        return relay_app(**{**good, **overrides}) if overrides else app

    return build


def test_doctor_has_help(bare_app):
    result = doctor(bare_app(), "--help")
    assert result.exit_code == 0 and "Usage:" in result.output and "--json" in result.output


def test_everything_passes_on_a_healthy_deploy(healthy):
    code, checks = report(healthy())

    assert code == 0
    assert statuses(checks) == dict.fromkeys(CHECKS, "ok")
    assert "migrations current" in checks["database"]["detail"]
    assert "new_offer_lead" in checks["SparkLoop webhook"]["detail"]  # checked in the dashboard only


def test_the_table_has_one_line_per_check_with_a_mark(healthy, sandbox):
    app = healthy(SPRIG_API_KEY="wrong-sprig-key")

    result = doctor(app)

    assert result.exit_code == 1
    lines = {name: next(line for line in result.output.splitlines() if f" {name} " in line) for name in CHECKS}
    assert "✘" in lines["Sprig key"] and "other Sprig environment" in lines["Sprig key"]
    assert all("✔" in line for name, line in lines.items() if name != "Sprig key")
    assert "wrong-sprig-key" not in result.output


def test_vendors_without_credentials_are_not_configured_not_failures(bare_app):
    code, checks = report(bare_app())

    assert code == 0
    assert statuses(checks) == {
        "configuration": "ok", "database": "ok", "payload keys": "ok", "broker": "ok",
        "Sprig key": "not_configured", "Spruce token": "not_configured", "Spruce note members": "not_configured",
        "SparkLoop key": "not_configured", "SparkLoop webhook": "not_configured",
        # no REDIS_URL: the marks live inside the worker process
        "sweep (beat)": "skipped", "retention": "skipped",
    }
    assert "not configured" in doctor(bare_app()).output


@ONE_STORE
def test_the_sparkloop_key_is_checked_without_relay_public_url_the_webhook_is_not(healthy, sandbox):
    code, checks = report(healthy(RELAY_PUBLIC_URL=""))

    assert code == 0
    assert checks["SparkLoop key"]["status"] == "ok"
    assert checks["SparkLoop webhook"]["status"] == "not_configured"
    assert "RELAY_PUBLIC_URL" in checks["SparkLoop webhook"]["detail"]

    code, checks = report(healthy(RELAY_PUBLIC_URL="", SPARKLOOP_API_KEY="wrong-sparkloop-key"))
    assert code == 1
    assert checks["SparkLoop key"]["status"] == "failed" and "401" in checks["SparkLoop key"]["detail"]
    assert "wrong-sparkloop-key" not in json.dumps(checks)


@ONE_STORE
def test_no_note_members_is_a_warning_not_a_pass_nor_a_failure(healthy):
    app = healthy(SPRUCE_NOTE_MEMBER_IDS="")

    code, checks = report(app)
    assert code == 0
    members = checks["Spruce note members"]
    assert members["status"] == "warning" and "SPRUCE_NOTE_MEMBER_IDS is not set" in members["detail"]
    assert "SPRUCE_NOTE_MEMBER_IDS" in members["fix"]

    result = doctor(app)
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if " Spruce note members " in line)
    assert "!" in line and "✔" not in line


def test_wrong_credentials_fail_with_what_to_do(healthy):
    app = healthy(SPRIG_API_KEY="wrong-sprig-key", SPRUCE_API_TOKEN="wrong-spruce-token",
                  SPARKLOOP_API_KEY="wrong-sparkloop-key")

    code, checks = report(app)

    assert code == 1
    assert checks["Sprig key"]["status"] == "failed" and "403" in checks["Sprig key"]["detail"]
    assert "other Sprig environment" in checks["Sprig key"]["fix"]
    assert checks["Spruce token"]["status"] == "failed" and "SPRUCE_API_TOKEN" in checks["Spruce token"]["detail"]
    assert checks["Spruce note members"]["status"] == "skipped"
    assert checks["SparkLoop key"]["status"] == "failed" and "401" in checks["SparkLoop key"]["detail"]
    assert checks["SparkLoop webhook"]["status"] == "skipped"
    text = json.dumps(checks)
    assert not any(wrong in text for wrong in ("wrong-sprig-key", "wrong-spruce-token", "wrong-sparkloop-key"))


@pytest.mark.parametrize("members, named", [
    ("entity_0NOTAMEMBER1", "entity_0NOTAMEMBER1"),
    (f"{TEAMMATE},{SUSPENDED}", SUSPENDED),
])
def test_note_members_must_be_active_members_of_the_organization(healthy, members, named):
    code, checks = report(healthy(SPRUCE_NOTE_MEMBER_IDS=members))

    assert code == 1
    assert checks["Spruce token"]["status"] == "ok"
    assert checks["Spruce note members"]["status"] == "failed"
    assert named in checks["Spruce note members"]["detail"]
    assert TEAMMATE not in checks["Spruce note members"]["detail"]


def test_the_webhook_must_be_registered_with_relays_events(relay_app, sandbox):
    app = relay_app(RELAY_PUBLIC_URL=PUBLIC_URL)
    swept(app)
    code, checks = report(app)
    assert code == 1
    assert checks["SparkLoop key"]["status"] == "ok"
    assert checks["SparkLoop webhook"]["status"] == "failed"
    assert "relay sparkloop webhooks register" in checks["SparkLoop webhook"]["fix"]

    httpx.post(f"{sandbox.sparkloop_url}/webhooks", headers={"X-Api-Key": SETTINGS.sparkloop_api_key},
               json={"url": f"{PUBLIC_URL}/webhooks/sparkloop", "new_referral": True}, timeout=5)
    code, checks = report(app)
    assert code == 1
    assert "reward_unlocked, new_partner_referral, reward_redeemed" in checks["SparkLoop webhook"]["detail"]

    register(app)
    assert report(app)[0] == 0


@ONE_STORE
def test_a_public_url_sparkloop_cannot_send_to_says_so_rather_than_register(healthy):
    app = healthy(RELAY_PUBLIC_URL="http://relay.example.com")

    code, checks = report(app)

    assert code == 1
    assert checks["SparkLoop key"]["status"] == "ok"
    webhook = checks["SparkLoop webhook"]
    assert webhook["status"] == "failed" and "RELAY_PUBLIC_URL is not https://" in webhook["detail"]
    assert "RELAY_PUBLIC_URL" in webhook["fix"] and "register" not in webhook["fix"]
    # What the fix would have sent the operator to: refused, exit 2.
    refused = app.test_cli_runner().invoke(main, ["sparkloop", "webhooks", "register"])
    assert refused.exit_code == 2 and "RELAY_PUBLIC_URL is not https://" in refused.output


@ONE_STORE
def test_a_stale_or_missing_sweep_means_beat_is_not_running(healthy, redis_url):
    app = healthy()
    client = redis.Redis.from_url(redis_url)
    client.set(LAST_SWEPT, str(time.time() - 600))
    code, checks = report(app)
    assert code == 1
    assert checks["sweep (beat)"]["status"] == "failed" and "10m ago" in checks["sweep (beat)"]["detail"]
    assert "beat" in checks["sweep (beat)"]["fix"]

    client.delete(LAST_SWEPT)
    client.close()
    code, checks = report(app)
    assert code == 1 and "no sweep has finished" in checks["sweep (beat)"]["detail"]


# --- payload keys ---------------------------------------------------------------------------

OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_every_key_id_in_the_store_must_be_in_relay_payload_keys(relay_app, healthy):
    plain = healthy()
    code, checks = report(plain)
    keys = checks["payload keys"]
    assert keys["status"] == "ok" and "no stored payload is encrypted" in keys["detail"]

    sealed = healthy(RELAY_PAYLOAD_KEYS=OLD_KEY)
    assert post_event(sealed.test_client(), load_fixture("new_referral")).status_code == 200
    invalid = load_fixture("reward_unlocked")
    del invalid["subscriber"]["email"]
    assert post_event(sealed.test_client(), invalid).status_code == 400  # its errors are sealed too
    code, checks = report(sealed)
    assert code == 0 and checks["payload keys"]["status"] == "ok"
    assert key_id(OLD_KEY) in checks["payload keys"]["detail"]

    # One process forgotten in a rotation: it holds only the new key.
    code, checks = report(healthy(RELAY_PAYLOAD_KEYS=NEW_KEY))
    keys = checks["payload keys"]
    assert code == 1 and keys["status"] == "failed"
    assert key_id(OLD_KEY) in keys["detail"] and f"it holds {key_id(NEW_KEY)}" in keys["detail"]
    assert "RELAY_PAYLOAD_KEYS" in keys["fix"] and "relay keys status" in keys["fix"]
    assert OLD_KEY not in json.dumps(checks) and NEW_KEY not in json.dumps(checks)

    code, checks = report(plain)  # no keys at all
    assert code == 1 and "RELAY_PAYLOAD_KEYS is not set" in checks["payload keys"]["detail"]

    code, checks = report(healthy(RELAY_PAYLOAD_KEYS=f"{NEW_KEY},{OLD_KEY}"))  # mid-rotation: fine
    assert code == 0 and checks["payload keys"]["status"] == "ok"


# --- retention ------------------------------------------------------------------------------


@ONE_STORE
def test_the_last_retention_run_is_shown(healthy, redis_url):
    app = healthy()
    code, checks = report(app)
    retention = checks["retention"]
    assert code == 0 and retention["status"] == "ok"
    assert "ago (beat): purged 0" in retention["detail"] and "older than 30d" in retention["detail"]

    client = redis.Redis.from_url(redis_url)
    record = json.loads(client.get(LAST_RUN))
    client.set(LAST_RUN, json.dumps(record | {"finished_at": time.time() - 3 * 86400}))
    code, checks = report(app)
    assert code == 0 and checks["retention"]["status"] == "warning"
    assert "last run 3d ago" in checks["retention"]["detail"] and "03:00 UTC" in checks["retention"]["fix"]

    client.set(LAST_RUN, json.dumps(record | {"error": "OperationalError"}))
    code, checks = report(app)
    assert code == 1 and checks["retention"]["status"] == "failed"
    assert "failed (OperationalError)" in checks["retention"]["detail"]

    client.delete(LAST_RUN)
    client.close()
    code, checks = report(app)
    assert code == 0 and checks["retention"]["status"] == "skipped"
    assert "no run recorded yet" in checks["retention"]["detail"]

    code, checks = report(healthy(RELAY_RETENTION_PURGE="off"))
    assert checks["retention"]["status"] == "not_configured" and "RELAY_RETENTION_PURGE=off" in checks["retention"]["detail"]


@ONE_STORE
@pytest.mark.parametrize("variable, value", [
    ("RELAY_VENDOR_TIMEOUT_S", "soon"),
    ("RELAY_PUBLIC_URL", "relay.example.com"),
    ("RELAY_PUBLIC_URL", "https://admin:hunter22@relay.example.com"),
    ("RELAY_PUBLIC_URL", "https://relay.example.com/?via=proxy"),
])
def test_an_invalid_configuration_fails_first_naming_the_variable(environ, bare_app, variable, value):
    broken = ScriptInfo(create_app=lambda: create_app({**environ, variable: value}))

    code, checks = report(bare_app(), obj=broken)

    assert code == 1
    assert checks["configuration"]["status"] == "failed"
    assert variable in checks["configuration"]["detail"]
    assert "hunter22" not in checks["configuration"]["detail"]
    assert {c["status"] for name, c in checks.items() if name != "configuration"} == {"skipped"}


@ONE_STORE
def test_the_configuration_fails_without_the_token_the_web_process_needs(environ, bare_app):
    """The `relay` command builds the base app, which needs no token; the web process does."""
    info = ScriptInfo(create_app=lambda: create_base_app({**environ, "SPARKLOOP_WEBHOOK_TOKEN": ""}))

    code, checks = report(bare_app(), obj=info)

    assert code == 1
    assert checks["configuration"]["status"] == "failed"
    assert "SPARKLOOP_WEBHOOK_TOKEN" in checks["configuration"]["detail"]
    assert checks["broker"]["status"] == "ok"  # the other checks still run


@ONE_STORE
def test_pending_migrations_say_run_db_upgrade(relay_app, tmp_path):
    app = relay_app(migrate=False, DATABASE_URL=f"sqlite:///{tmp_path / 'behind.sqlite3'}")
    Runtime.of(app).db.upgrade("0007")

    code, checks = report(app)

    assert code == 1
    assert checks["database"]["status"] == "failed"
    assert "at 0007" in checks["database"]["detail"] and checks["database"]["fix"] == "run `relay db upgrade`"
    assert checks["broker"]["status"] == "ok"


@ONE_STORE
def test_an_unreachable_database_or_broker_fails_its_own_check(relay_app):
    app = relay_app(migrate=False, DATABASE_URL="postgresql://doctor:pw-in-url@127.0.0.1:9/relay",
                    REDIS_URL="redis://:pw-in-url@127.0.0.1:9/0")

    code, checks = report(app)

    assert code == 1
    assert checks["database"]["status"] == "failed" and "unreachable" in checks["database"]["detail"]
    assert checks["broker"]["status"] == "failed" and "REDIS_URL" in checks["broker"]["fix"]
    assert checks["sweep (beat)"]["status"] == "failed" and "Redis unreachable" in checks["sweep (beat)"]["detail"]
    assert checks["Sprig key"]["status"] == "ok"  # the vendors are checked all the same
    assert "pw-in-url" not in json.dumps(checks)


@ONE_STORE
def test_a_slow_vendor_is_cut_short(healthy, sandbox, monkeypatch):
    monkeypatch.setattr(operations.doctor, "VENDOR_TIMEOUT_S", 1.0)  # 5 s in production
    app = healthy()
    sandbox.configure(latency_ms={"sprig": 4000})
    started = time.monotonic()

    code, checks = report(app)

    assert time.monotonic() - started < 4
    assert code == 1
    assert checks["Sprig key"]["status"] == "failed" and "timeout" in checks["Sprig key"]["detail"]
    assert checks["Spruce token"]["status"] == "ok"
    # The sandbox (this process's, shared by its tests) records the probe when its slow answer
    # ends: within this test, not in the next one's state (it once broke a count there).
    assert wait_for(lambda: any(r["path"].endswith("/relay-doctor-probe") for r in sandbox_state(sandbox)["requests"]),
                    timeout=10)


@pytest.mark.skipif(not DOCUMENTS.is_dir(), reason="the vendors' OpenAPI documents are not here")
def test_the_sandbox_answers_the_organization_reads_as_spruces_document_says(sandbox):
    """The reads the doctor makes, as SpruceOrganizationClient sends them (one page of 500),
    and page by page at the smallest size, against Spruce's OpenAPI (Organization,
    OrganizationMembers); a page of 1 is below the documented 2 and refused."""
    def get(path: str, **params) -> Exchange:
        response = httpx.get(f"{sandbox.spruce_url}{path}", params=params, timeout=5,
                             headers={"Authorization": f"Bearer {SETTINGS.spruce_api_token}"})
        return Exchange("GET", str(response.request.url), dict(response.request.headers), b"",
                        response.status_code, dict(response.headers), response.content)

    exchanges = [get("/organization"), get("/organization/members", pageSize=MEMBERS_PAGE_SIZE)]
    token = None
    for _ in range(len(MEMBERS)):  # bounded: a page holds at least one member
        exchanges.append(get("/organization/members", pageSize=2, **({"paginationToken": token} if token else {})))
        page = json.loads(exchanges[-1].response_body)
        if not page["hasMore"]:
            break
        token = page["paginationToken"]
    refused = get("/organization/members", pageSize=1)

    def ids(exchange: Exchange) -> list[str]:
        return [m["id"] for m in json.loads(exchange.response_body)["members"]]

    assert [i for e in exchanges[2:] for i in ids(e)] == ids(exchanges[1]) == [m["id"] for m in MEMBERS]
    assert problems(exchanges) == []
    # The document too says 2 at least (it flags the request); the 400 is in Spruce's error shape.
    assert refused.status == 400
    [flagged] = problems([refused])
    assert flagged.startswith("spruce request GET /spruce/v1/organization/members -> 400: ")
