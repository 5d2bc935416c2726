"""Configuration: read once, validated, with errors that name the variable."""
from __future__ import annotations

import json
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from relay.app import create_base_app
from relay.config import ConfigError, load_config
from relay.durations import parse_duration
from web import create_app
from web.cli.support import parse_when


def config(**env):
    return load_config(env, instance_path="/tmp/relay-instance")


def test_defaults_run_on_embedded_services():
    c = config()
    assert c.database_url == "sqlite:////tmp/relay-instance/relay.sqlite3"
    assert c.broker_url == "filesystem://"
    assert c.sprig_api_url == "https://api.sprig.com"
    assert c.spruce_api_url == "https://api.sprucehealth.com/v1"
    assert c.sprig_user_id_source == "email"
    assert c.configured_destinations == frozenset()


def test_heroku_postgres_scheme_is_accepted():
    assert config(DATABASE_URL="postgres://u:p@db.example:5432/relay").database_url == \
        "postgresql+psycopg://u:p@db.example:5432/relay"


def test_tokens_are_a_comma_separated_list():
    assert config(SPARKLOOP_WEBHOOK_TOKEN=" new , old ,").webhook_tokens == ("new", "old")


def test_rediss_url_uses_tls_with_verification_by_default():
    c = config(REDIS_URL="rediss://:secret@redis.example:6380")
    assert c.broker_url.startswith("rediss://")
    assert c.redis_ssl_cert_reqs == ssl.CERT_REQUIRED
    assert config(REDIS_URL="rediss://h:1", REDIS_SSL_CERT_REQS="none").redis_ssl_cert_reqs == ssl.CERT_NONE


@pytest.mark.parametrize("env, named", [
    ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ({"SPRIG_API_URL": "ftp://x"}, "SPRIG_API_URL"),
    ({"SPRUCE_API_URL": "not a url"}, "SPRUCE_API_URL"),
    ({"SPRIG_USER_ID_SOURCE": "name"}, "SPRIG_USER_ID_SOURCE"),
    ({"RELAY_MAX_BODY_BYTES": "lots"}, "RELAY_MAX_BODY_BYTES"),
    ({"RELAY_ROUTES": "{bad json"}, "RELAY_ROUTES"),
    ({"RELAY_ROUTES": '{"new_referral": ["mailchimp"]}'}, "RELAY_ROUTES"),
])
def test_bad_values_are_rejected_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        config(**env)


def test_web_app_refuses_to_start_without_a_webhook_token(tmp_path):
    with pytest.raises(ConfigError, match="SPARKLOOP_WEBHOOK_TOKEN"):
        create_app({"RELAY_INSTANCE_PATH": str(tmp_path)})
    # The workers and the CLI do not answer webhooks: they start without it.
    worker_side = create_base_app({"RELAY_INSTANCE_PATH": str(tmp_path)})
    assert worker_side.config["RELAY"].webhook_tokens == ()
    assert "celery" in worker_side.extensions and "relay.db" in worker_side.extensions


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 7 * 86400), ("2w", 14 * 86400), ("1.5h", 5400),
    ("45", 45),
])
def test_one_duration_syntax_for_configuration_and_the_command_line(text, seconds):
    assert parse_duration(text) == seconds
    assert config(RELAY_RETRY_MAX_AGE=text).retry_max_age_s == seconds
    assert config(SPRIG_RATE_LIMIT=f"10/{text}").sprig_rate_limit.period_s == seconds
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert parse_when(text, now=now) == now - timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0s", "-1h", "soon", "", "1e999", "nan"])
def test_a_bad_duration_is_refused_everywhere_naming_the_forms(text):
    with pytest.raises(ValueError, match="90s, 30m, 2h, 7d or 2w"):
        parse_duration(text)
    with pytest.raises(ConfigError, match="RELAY_BREAKER_COOLDOWN.*90s, 30m, 2h, 7d or 2w"):
        config(RELAY_BREAKER_COOLDOWN=text or " x")


def test_config_error_message_does_not_echo_secrets():
    with pytest.raises(ConfigError) as raised:
        config(REDIS_URL="http://:hunter2@redis.example")
    assert "hunter2" not in str(raised.value)


def test_sentry_starts_only_with_a_dsn_and_without_personal_data(tmp_path):
    import sentry_sdk

    create_base_app({"RELAY_INSTANCE_PATH": str(tmp_path)})
    assert not sentry_sdk.get_client().is_active()
    try:
        create_base_app({"RELAY_INSTANCE_PATH": str(tmp_path), "SENTRY_DSN": "http://key@127.0.0.1:9/1",
                         "SOURCE_VERSION": "a1b2c3", "SENTRY_ENVIRONMENT": "staging"})
        client = sentry_sdk.get_client()
        assert client.is_active()
        options = client.options
        assert options["data_collection"]["user_info"] is False and options["data_collection"]["http_bodies"] == []
        assert options["send_default_pii"] is None  # the deprecated option is left alone
        assert (options["release"], options["environment"], options["traces_sample_rate"]) == ("a1b2c3", "staging", 0.0)
        assert options["max_request_body_size"] == "never"
        assert {"flask", "celery"} <= set(client.integrations)
    finally:
        sentry_sdk.init()  # back to a disabled client for the other tests


def test_every_variable_is_documented_in_env_example_and_the_readme():
    import re

    from relay.config import RELEASE_VARIABLES

    root = Path(__file__).resolve().parent.parent
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', (root / "relay" / "config.py").read_text()))
    read -= set(RELEASE_VARIABLES)  # the platform's, named in SENTRY_RELEASE's entry
    example = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.MULTILINE))
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (root / "README.md").read_text(), re.MULTILINE))
    assert read - example == set(), "read by relay/config.py, missing from .env.example"
    assert read - table == set(), "read by relay/config.py, missing from the README's configuration table"
    assert example - table == set(), "in .env.example, missing from the README's configuration table"
    heroku = set(json.loads((root / "app.json").read_text())["env"])
    add_ons = {"DATABASE_URL", "REDIS_URL"}  # Heroku's PostgreSQL and Redis add-ons set them
    assert read - add_ons - heroku == set(), "read by relay/config.py, missing from app.json"
