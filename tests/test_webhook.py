"""The webhook endpoint: every documented payload, and every kind of bad input."""
from __future__ import annotations

import json

import pytest

from schemas.events import EVENTS
from testbed.apps import TOKEN, deliveries, events, post_event
from testbed.examples import FIXTURE_NAMES, WITHOUT_EXAMPLE, load_fixture


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_documented_payload_is_stored_with_its_deliveries(client, app, fixture):
    payload = load_fixture(fixture)
    response = post_event(client, payload)

    assert response.status_code == 200
    assert response.data == b""
    [event] = events(app)
    assert (event.type, event.status) == (payload["type"], "received")
    assert event.payload == payload  # stored as sent, unknown fields included
    assert [d.destination for d in deliveries(app)] == list(app.config["RELAY"].destinations.receiving(payload["type"]))


def test_both_shapes_of_reward_unlocked_are_two_events(client, app):
    for name in ("reward_unlocked", "reward_unlocked__legacy"):
        assert post_event(client, load_fixture(name)).status_code == 200
    assert [(e.type, e.status) for e in events(app)] == [("reward_unlocked", "received")] * 2


@pytest.mark.parametrize("event_type", WITHOUT_EXAMPLE)
def test_event_types_without_an_example_are_accepted_and_kept_raw(client, app, event_type):
    payload = {"type": event_type, "campaign": {"id": "partner_campaign_de9c1c7c7bbc"},
               "something_new": {"nested": [1, 2]}}
    assert post_event(client, payload).status_code == 200
    [event] = events(app)
    assert event.type == event_type and event.payload == payload
    assert [d.destination for d in deliveries(app)] == list(app.config["RELAY"].destinations.receiving(event_type))


def test_unknown_fields_are_tolerated_and_kept(client, app):
    payload = load_fixture("new_referral")
    payload["added_later"] = True
    payload["subscriber"]["new_nested_field"] = {"x": 1}
    assert post_event(client, payload).status_code == 200
    assert events(app)[0].payload["subscriber"]["new_nested_field"] == {"x": 1}


def test_unknown_type_is_stored_unhandled_and_answered_200(client, app):
    response = post_event(client, {"type": "partner_referral_rejected", "email": "a@b.co"})
    assert response.status_code == 200
    [event] = events(app)
    assert (event.type, event.status) == ("partner_referral_rejected", "unhandled")
    assert deliveries(app) == []


# --- refused before anything is stored: no vendor, no worker, one store -------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_missing_or_wrong_token_is_401_and_stores_nothing(bare_app, token):
    app = bare_app()
    response = post_event(app.test_client(), load_fixture("new_referral"), token=token)
    assert response.status_code == 401
    assert "SparkLoop-Token" in response.get_json()["error"]
    assert events(app) == []


def test_each_of_two_rotating_tokens_is_accepted(bare_app):
    app = bare_app(SPARKLOOP_WEBHOOK_TOKEN=f"old-token, {TOKEN}")
    client = app.test_client()
    assert post_event(client, load_fixture("new_referral"), token="old-token").status_code == 200
    assert post_event(client, load_fixture("reward_unlocked"), token=TOKEN).status_code == 200
    assert post_event(client, load_fixture("reward_redeemed"), token="older").status_code == 401
    assert len(events(app)) == 2


def test_oversized_body_is_413(bare_app):
    app = bare_app()
    payload = load_fixture("new_referral")
    payload["padding"] = "x" * (256 * 1024)
    response = post_event(app.test_client(), payload)
    assert response.status_code == 413
    assert "limit" in response.get_json()["error"]
    assert events(app) == []


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b'["a", "list"]', "JSON object"),
    (b'"a string"', "JSON object"),
])
def test_non_json_or_non_object_body_is_400(bare_app, body, message):
    app = bare_app()
    response = post_event(app.test_client(), body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert events(app) == []


@pytest.mark.parametrize("body, where, reason", [
    (b'{"type": "new_referral", "subscriber": {"name": "Jane\\u0000Doe"}}', {"subscriber": {"name": None}}, "NUL"),
    (b'{"type": "new_referral", "referrer": {"name": "\\ud800 Doe"}}', {"referrer": {"name": None}}, "surrogate"),
    (b'{"type": "x", "a\\u0000b": 1}', {"(a key)": None}, "NUL"),
    (b'{"type": "reward_unlocked", "referrals": NaN}', {"referrals": None}, "finite"),
    (b'{"type": "reward_unlocked", "referrals": Infinity}', {"referrals": None}, "finite"),
    (b'{"type": "reward_unlocked", "list": [1, -Infinity]}', {"list": {"1": None}}, "finite"),
    (b'{"type": "reward_unlocked", "referrals": 1e999}', {"referrals": None}, "finite"),
    (b'{"type": "x", "deep": ' + b"[" * 40 + b"]" * 40 + b"}", None, "Nested deeper than 32"),
    (b"[" * 50_000 + b"]" * 50_000, {"_body": None}, "Nested deeper than 32"),
])
def test_json_the_store_cannot_keep_is_400_naming_where(bare_app, body, where, reason):
    app = bare_app()
    response = post_event(app.test_client(), body)
    assert response.status_code == 400
    answer = response.get_json()
    assert "cannot be stored" in answer["error"] or "nested too deeply" in answer["error"]
    assert reason in json.dumps(answer["fields"])
    if where is not None:
        assert _shape(answer["fields"]) == where
    assert events(app) == []


def _shape(fields: dict) -> dict:
    return {key: _shape(value) if isinstance(value, dict) else None for key, value in fields.items()}


def test_database_down_is_503(bare_app):
    app = bare_app(migrate=False, DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    response = post_event(app.test_client(), load_fixture("new_referral"))
    assert response.status_code == 503
    assert "database" in response.get_json()["error"]


def test_healthz_answers_without_any_service(bare_app):
    app = bare_app(migrate=False, DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


# --- stored: on both stores ---------------------------------------------------------------


def test_schema_invalid_payload_is_stored_invalid_and_answered_400(client, app):
    payload = load_fixture("reward_unlocked")
    del payload["reward"]["id"]
    payload["subscriber"]["tot_referrals"] = "many"
    response = post_event(client, payload)

    assert response.status_code == 400
    body = response.get_json()
    assert body["fields"]["reward"] == {"id": ["Missing data for required field."]}
    assert "tot_referrals" in body["fields"]["subscriber"]
    [event] = events(app)
    assert event.status == "invalid" and event.errors == body["fields"]
    assert event.id == body["event_id"]
    assert deliveries(app) == []


def test_an_invalid_payload_posted_again_gets_the_same_400(client, app):
    payload = load_fixture("reward_unlocked")
    del payload["reward"]["id"]
    first = post_event(client, payload)
    again = post_event(client, payload)
    assert (first.status_code, again.status_code) == (400, 400)
    assert again.get_json() == first.get_json()
    assert len(events(app)) == 1
    assert post_event(client, load_fixture("reward_unlocked")).status_code == 200
    assert post_event(client, load_fixture("reward_unlocked")).status_code == 200  # a valid duplicate


def test_missing_type_is_invalid(client, app):
    response = post_event(client, {"campaign_id": "MF6319db9890"})
    assert response.status_code == 400
    assert "type" in response.get_json()["fields"]
    assert events(app)[0].status == "invalid"


def test_redelivery_is_answered_200_without_a_second_event(client, app):
    payload = load_fixture("reward_unlocked")
    assert post_event(client, payload).status_code == 200
    reordered = json.dumps(dict(reversed(list(payload.items()))))
    assert post_event(client, reordered).status_code == 200
    assert len(events(app)) == 1
    assert len(deliveries(app)) == 2


def test_a_second_unlock_of_a_recurring_reward_is_a_new_event(client, app):
    first = load_fixture("reward_unlocked")
    second = load_fixture("reward_unlocked")
    second["referrals"] = second["subscriber"]["tot_referrals"] = 8
    assert post_event(client, first).status_code == 200
    assert post_event(client, second).status_code == 200
    assert len(events(app)) == 2


def test_vendor_without_credentials_gets_no_delivery(relay_app):
    app = relay_app(SPRUCE_API_TOKEN="")
    assert post_event(app.test_client(), load_fixture("reward_unlocked")).status_code == 200
    assert [d.destination for d in deliveries(app)] == ["sprig"]


def test_routes_can_be_overridden_by_configuration(relay_app):
    app = relay_app(RELAY_ROUTES='{"reward_unlocked": ["spruce"]}')
    assert post_event(app.test_client(), load_fixture("reward_unlocked")).status_code == 200
    assert [d.destination for d in deliveries(app)] == ["spruce"]


def test_readyz_checks_the_database_and_the_broker(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_naming_the_broker_when_redis_is_down(bare_app):
    app = bare_app(REDIS_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")


def test_the_openapi_document_describes_the_endpoint_from_the_registry(bare_app):
    from openapi_spec_validator import validate

    document = bare_app().test_client().get("/openapi.json").get_json()
    validate(document)
    body = document["paths"]["/webhooks/sparkloop"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schemas = document["components"]["schemas"]
    branches = [schemas[branch["$ref"].rsplit("/", 1)[1]]["properties"]["type"] for branch in body["oneOf"]]
    # Each handled type has its schema; any other type is accepted too (stored as unhandled).
    assert sorted(t for branch in branches for t in branch.get("enum", [])) == sorted(EVENTS)
    assert branches[-1]["not"] == {"enum": sorted(EVENTS)}
    assert set(document["paths"]["/webhooks/sparkloop"]["post"]["responses"]) == {"200", "400", "401", "413", "503"}


def test_a_connection_the_database_dropped_is_replaced_and_the_webhook_stored(client, app):
    """A PostgreSQL restart breaks the intake's pooled connection: the next webhook fails on it,
    which drops it from the pool, and is stored on a new one (web.webhooks tries once more)."""
    import sqlalchemy as sa

    from relay.runtime import Runtime

    if Runtime.of(app).db.engine.dialect.name != "postgresql":
        pytest.skip("the intake's own pool is PostgreSQL's")
    first, second = load_fixture("new_referral"), load_fixture("new_referral")
    second["subscriber"] = {**second["subscriber"], "id": "sub_after_the_restart"}
    assert post_event(client, first).status_code == 200
    intake = Runtime.of(app).db.intake_engine
    assert intake.pool.checkedin() == 1
    with Runtime.of(app).db.engine.connect() as conn:
        ended = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )).scalar()
    assert ended >= 1
    assert post_event(client, second).status_code == 200
    assert [e.payload["subscriber"]["id"] for e in events(app)] == [
        first["subscriber"]["id"], "sub_after_the_restart"]
