"""What every response carries, and what the web process refuses to start with."""
import pytest
from flask import Blueprint

from relay.config import DEV_WEBHOOK_TOKEN, ConfigError
from testbed.apps import make_app, post_event
from testbed.services import PG_URL
from web import create_app


def test_every_answer_carries_the_security_headers(client):
    for response in (client.get("/healthz"), client.get("/no/such/page"), post_event(client, {}, token="wrong")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP: the router's own hop


def test_the_routers_forwarded_scheme_and_address_are_trusted_for_the_configured_hops(relay_app):
    app = relay_app(RELAY_PROXY_HOPS="1")
    seen = {}
    probe = Blueprint("probe", __name__)

    @probe.get("/probe")
    def show():
        from flask import request
        seen.update(scheme=request.scheme, remote=request.remote_addr)
        return ""

    app.register_blueprint(probe)
    response = app.test_client().get("/probe", headers={"X-Forwarded-Proto": "https",
                                                        "X-Forwarded-For": "203.0.113.9, 198.51.100.1"})
    assert seen == {"scheme": "https", "remote": "198.51.100.1"}  # one hop: only the router's own entry
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")

    untrusting = relay_app(RELAY_PROXY_HOPS="0")
    untrusting.register_blueprint(probe)
    untrusting.test_client().get("/probe", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert seen == {"scheme": "http", "remote": "127.0.0.1"}


def test_an_unexpected_error_is_a_json_line_without_a_stack_trace(relay_app):
    app = relay_app()
    app.config["TESTING"] = False  # as in production: Flask would otherwise re-raise
    app.config["PROPAGATE_EXCEPTIONS"] = False
    broken = Blueprint("broken", __name__)

    @broken.get("/broken")
    def fail():
        raise ValueError("ada@example.com Traceback")

    app.register_blueprint(broken)
    response = app.test_client().get("/broken")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error; the request was not processed, please retry"}
    assert b"ada@example.com" not in response.data and b"Traceback" not in response.data
    assert response.headers["X-Frame-Options"] == "DENY"


def test_unknown_paths_and_methods_are_named_in_json(client):
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "not found" in missing.get_json()["error"].lower()
    wrong_method = client.get("/webhooks/sparkloop")
    assert wrong_method.status_code == 405 and "method" in wrong_method.get_json()["error"].lower()


@pytest.mark.parametrize("token", [DEV_WEBHOOK_TOKEN, f"real-token,{DEV_WEBHOOK_TOKEN}"])
def test_the_web_process_refuses_the_development_token_outside_sqlite(tmp_path, token):
    env = {"DATABASE_URL": PG_URL, "SPARKLOOP_WEBHOOK_TOKEN": token, "RELAY_INSTANCE_PATH": str(tmp_path)}
    with pytest.raises(ConfigError, match="SPARKLOOP_WEBHOOK_TOKEN"):
        create_app(env)
    with pytest.raises(ConfigError, match="SPARKLOOP_WEBHOOK_TOKEN"):
        create_app({**env, "SPARKLOOP_WEBHOOK_TOKEN": ""})
    # `relay dev` (SQLite) may use it.
    make_app({"SPARKLOOP_WEBHOOK_TOKEN": DEV_WEBHOOK_TOKEN, "RELAY_INSTANCE_PATH": str(tmp_path)}, migrate=False)


def test_every_path_answers_an_undeclared_method_with_405_and_the_allow_header(bare_app):
    app = bare_app()
    client = app.test_client()
    rules = [rule for rule in app.url_map.iter_rules() if "<" not in rule.rule]
    assert {"/webhooks/sparkloop", "/healthz", "/readyz", "/openapi.json", "/metrics"} <= {r.rule for r in rules}
    for rule in rules:
        for method in ("TRACE", "PUT", "DELETE", "PATCH"):
            if method in rule.methods:
                continue
            answer = client.open(rule.rule, method=method)
            assert answer.status_code == 405, (method, rule.rule)
            # RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
            assert set(answer.headers.get("Allow", "").replace(" ", "").split(",")) == set(rule.methods), rule.rule
            assert answer.is_json and "method" in answer.get_json()["error"].lower()
            assert answer.headers["X-Frame-Options"] == "DENY"
