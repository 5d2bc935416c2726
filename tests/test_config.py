"""Configuration: read once, validated, with errors that name the variable."""
from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from relay.app import create_base_app
from relay.config import ConfigError, load_config
from relay.durations import parse_duration
from web import create_app
from relay.durations import parse_when


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

    from testbed.sentry import sentry_off

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
        sentry_off()  # no client for the other tests (sentry_sdk.init() would leave an active one)


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


# --- .env and empty values ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
RELAY = str(Path(sys.executable).with_name("relay"))
# What a developer's shell may hold that would make these runs use other services.
CONFIGURED_ELSEWHERE = {"DATABASE_URL", "REDIS_URL", "SPRIG_API_KEY", "SPRUCE_API_TOKEN", "SPARKLOOP_API_KEY",
                        "SPARKLOOP_WEBHOOK_TOKEN", "RELAY_INSTANCE_PATH"}


def clean_environment(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CONFIGURED_ELSEWHERE} | extra


def test_every_variable_read_is_listed_in_variables():
    import re

    from relay.config import RELEASE_VARIABLES, VARIABLES

    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', (ROOT / "relay" / "config.py").read_text()))
    read |= {"RELAY_INSTANCE_PATH"}  # relay.app's
    assert read - set(RELEASE_VARIABLES) == set(VARIABLES)
    example = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    platform = {"PORT", "WEB_CONCURRENCY", "WEB_THREADS", "WORKER_CONCURRENCY"}  # gunicorn's and the Procfile's
    assert example - platform == set(VARIABLES)


def test_env_example_as_it_is_means_every_default():
    """Its empty values mean the default; its others are the defaults."""
    from dotenv import dotenv_values

    example = dotenv_values(ROOT / ".env.example")
    assert "" in example.values()
    assert config(**example) == config()


@pytest.mark.parametrize("name", ["SPARKLOOP_WEBHOOK_TOKEN", "DATABASE_URL", "REDIS_URL", "LOG_FORMAT",
                                  "RELAY_ROUTES", "SPRIG_ATTRIBUTES", "SENTRY_RELEASE", "RELAY_RETENTION_PURGE"])
def test_an_empty_variable_is_an_unset_one(name):
    assert config(**{name: ""}) == config() == config(**{name: "  "})


def test_env_file_adds_what_the_environment_lacks_and_empty_means_unset(tmp_path):
    from relay.config import load_env_file

    (tmp_path / ".env").write_text(
        "RELAY_RETRY_MAX_ATTEMPTS=7\nRELAY_RETRY_BASE_S=5\nSPARKLOOP_WEBHOOK_TOKEN=\nLOG_FORMAT=\n"
        "SPRIG_API_KEY=from-file\n# a comment\nexport RELAY_PROXY_HOPS=2\n")
    environ = {"RELAY_RETRY_BASE_S": "9", "LOG_FORMAT": "", "SPRIG_API_KEY": " ", "HOME": "/home/x", "PS1": ""}

    loaded = load_env_file(tmp_path / ".env", environ)

    assert sorted(loaded) == ["RELAY_PROXY_HOPS", "RELAY_RETRY_MAX_ATTEMPTS", "SPRIG_API_KEY"]
    assert environ == {"RELAY_RETRY_MAX_ATTEMPTS": "7", "RELAY_RETRY_BASE_S": "9",  # the environment wins
                       "SPRIG_API_KEY": "from-file",  # an empty variable is an unset one: the file's fills it
                       "RELAY_PROXY_HOPS": "2", "HOME": "/home/x", "PS1": ""}  # not Relay's: left alone
    assert "LOG_FORMAT" not in environ and "SPARKLOOP_WEBHOOK_TOKEN" not in environ
    assert load_env_file(tmp_path / "absent.env", environ) == []


@pytest.mark.parametrize("process", [
    ["{relay}", "db", "upgrade"],                                                     # the relay command
    ["{python}", "-c", "from web import create_app; create_app()"],                    # gunicorn's web:create_app()
    ["{python}", "-c", "import workers; workers.app.loader.import_default_modules()"],  # celery -A workers worker/beat
])
def test_every_process_reads_env_from_its_working_directory_the_environment_winning(tmp_path, process):
    command = [part.format(relay=RELAY, python=sys.executable) for part in process]
    (tmp_path / ".env").write_text("SPARKLOOP_WEBHOOK_TOKEN=from-dotenv\nRELAY_RETRY_MAX_ATTEMPTS=soon\n")
    env = clean_environment(RELAY_INSTANCE_PATH=str(tmp_path / "instance"))

    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "RELAY_RETRY_MAX_ATTEMPTS must be a whole number" in refused.stderr

    accepted = subprocess.run(command, cwd=tmp_path, env=env | {"RELAY_RETRY_MAX_ATTEMPTS": "3"},
                              capture_output=True, text=True, timeout=60)
    assert accepted.returncode == 0, accepted.stderr


def test_relay_dev_starts_with_env_example_copied_to_env(tmp_path):
    """The file's own instructions: copy it to .env. Its empty SPARKLOOP_WEBHOOK_TOKEN and
    LOG_FORMAT leave `relay dev` its defaults: it starts and answers its own token."""
    import httpx

    from relay.config import DEV_WEBHOOK_TOKEN
    from testbed.dev_processes import group_alive
    from testbed.net import free_port
    from testbed.waiting import wait_for
    from web.cli.dev import SAMPLE

    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    port, sandbox_port, redis_port = free_port(), free_port(), free_port()
    env = clean_environment(RELAY_INSTANCE_PATH=str(tmp_path / "instance"))
    terminal = tmp_path / "terminal.txt"
    with open(terminal, "wb") as out:
        dev = subprocess.Popen([RELAY, "dev", "--port", str(port), "--sandbox-port", str(sandbox_port),
                                "--redis-port", str(redis_port)], cwd=tmp_path,
                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            answers = []  # each look: None (not listening yet), -1 (exited), or the HTTP status

            def answered() -> bool:
                try:
                    answers.append(-1 if dev.poll() is not None else httpx.post(
                        f"http://127.0.0.1:{port}/webhooks/sparkloop", content=SAMPLE.read_bytes(), timeout=5,
                        headers={"SparkLoop-Token": DEV_WEBHOOK_TOKEN, "Content-Type": "application/json"},
                    ).status_code)
                except httpx.HTTPError:
                    answers.append(None)
                return answers[-1] is not None

            assert wait_for(answered, timeout=60, interval=0.5) and answers[-1] == 200, terminal.read_text()
            os.killpg(dev.pid, signal.SIGINT)
            assert dev.wait(timeout=40) == 0
        finally:
            if dev.poll() is None or group_alive(dev.pid):
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait(timeout=10)


@pytest.mark.parametrize("value, daily", [("daily", True), ("off", False), ("", True)])
def test_retention_purge_is_daily_unless_off(value, daily):
    assert config(RELAY_RETENTION_PURGE=value).retention_purge_daily is daily
    with pytest.raises(ConfigError, match="RELAY_RETENTION_PURGE must be one of daily, off"):
        config(RELAY_RETENTION_PURGE="weekly")
