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
from relay.destinations import Destination, Registry
from relay.durations import parse_when
from workers.sprig.settings import sprig_settings
from workers.spruce.settings import spruce_settings


def config(**env):
    return load_config(env, instance_path="/tmp/relay-instance")


def declaring(group) -> Destination:
    """A destination that declares `group` and does nothing else (only its settings are read here)."""
    def nothing(*_):
        raise AssertionError("not called")

    return Destination(name=group.name, settings=group, receives={}, default_sends=None, client=nothing,
                       deliver=nothing, most_calls=nothing, probe=nothing, checks=())


def test_defaults_run_on_embedded_services():
    c = config()
    assert c.database_url == "sqlite:////tmp/relay-instance/relay.sqlite3"
    assert c.broker_url == "filesystem://"
    assert sprig_settings(c).api_url == "https://api.sprig.com"
    assert spruce_settings(c).api_url == "https://api.sprucehealth.com/v1"
    assert sprig_settings(c).user_id_source == "email"
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
    assert "celery" in worker_side.extensions and "relay.runtime" in worker_side.extensions


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 7 * 86400), ("2w", 14 * 86400), ("1.5h", 5400),
    ("45", 45),
])
def test_one_duration_syntax_for_configuration_and_the_command_line(text, seconds):
    assert parse_duration(text) == seconds
    assert config(RELAY_RETRY_MAX_AGE=text).retry_max_age_s == seconds
    assert sprig_settings(config(SPRIG_RATE_LIMIT=f"10/{text}")).rate_limit.period_s == seconds
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert parse_when(text, now=now) == now - timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0s", "-1h", "soon", "", "1e999", "nan"])
def test_a_bad_duration_is_refused_everywhere_naming_the_forms(text):
    with pytest.raises(ValueError, match="90s, 30m, 2h, 7d or 2w"):
        parse_duration(text)
    with pytest.raises(ConfigError, match="RELAY_BREAKER_COOLDOWN.*90s, 30m, 2h, 7d or 2w"):
        config(RELAY_BREAKER_COOLDOWN=text or " x")


def test_a_destination_declares_its_own_settings_and_load_config_reads_them():
    """What a plug-in folder does: declare its group, and be handed to load_config."""
    from dataclasses import dataclass

    from relay.config import INSTALLED
    from relay.settings import CallRate, Rate, Setting, SettingsGroup, Text, Url

    @dataclass(frozen=True)
    class HookSettings:
        url: str
        secret: str | None
        rate_limit: CallRate

    hook = SettingsGroup("hook", "Hook", configured=lambda settings: settings.secret is not None,
                         build=lambda reading: HookSettings(**reading.values), settings=(
                             Setting("HOOK_URL", "url", Url(), default="http://127.0.0.1:9/", doc="where"),
                             Setting("HOOK_SECRET", "secret", Text(), secret=True, doc="its key"),
                             Setting("HOOK_RATE_LIMIT", "rate_limit", Rate(), default="5/1s", doc="its pace")))
    destinations = Registry({**INSTALLED, "hook": declaring(hook)})

    def load(**env):
        return load_config(env, instance_path="/tmp/relay-instance", destinations=destinations)

    assert load().of(hook) == HookSettings("http://127.0.0.1:9", None, CallRate(5, 1.0))
    assert load().configured_destinations == frozenset()
    configured = load(HOOK_SECRET="s", HOOK_URL=" ", RELAY_ROUTES='{"new_referral": ["hook", "sprig"]}')
    assert configured.configured_destinations == {"hook"} and configured.of(hook).secret == "s"
    assert configured.routes_override == {"new_referral": ("hook", "sprig")}
    with pytest.raises(ConfigError, match="RELAY_ROUTES"):
        config(RELAY_ROUTES='{"new_referral": ["hook"]}')  # without its group, no such destination
    with pytest.raises(ConfigError) as raised:
        load(HOOK_URL="ftp://x", HOOK_RATE_LIMIT="fast", RELAY_RETRY_BASE_S="0")
    assert str(raised.value) == ("RELAY_RETRY_BASE_S must be greater than zero (got 0); "
                                 "HOOK_URL must be a URL starting with http://, https:// and naming a host; "
                                 "HOOK_RATE_LIMIT must look like 1000/300s: calls per period (got 'fast')")


def test_a_secrets_value_is_never_in_an_error():
    from relay.settings import Choice, Setting, SettingsGroup

    group = SettingsGroup("vault", "Vault", build=lambda reading: reading.values, settings=(
        Setting("VAULT_MODE", "mode", Choice(("a", "b")), secret=True, doc="a or b"),))
    with pytest.raises(ConfigError) as raised:
        load_config({"VAULT_MODE": "hunter2"}, instance_path="/tmp/relay-instance",
                    destinations=Registry({"vault": declaring(group)}))
    assert str(raised.value) == "VAULT_MODE is not valid (the value is a secret: not shown)"


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


def test_every_declared_variable_is_documented_in_env_example_the_readme_and_app_json():
    import re

    from relay.config import DOCUMENTED_GROUPS

    root = Path(__file__).resolve().parent.parent
    declared = {setting.name for group in DOCUMENTED_GROUPS for setting in group.settings}
    example = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.MULTILINE))
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (root / "README.md").read_text(), re.MULTILINE))
    assert declared == example, "declared and .env.example differ"
    assert declared == table, "declared and the README's configuration table differ"
    heroku = set(json.loads((root / "app.json").read_text())["env"])
    not_on_heroku = {s.name for group in DOCUMENTED_GROUPS for s in group.settings if s.heroku is None}
    assert declared - not_on_heroku == heroku, "declared and app.json differ"


def test_env_example_app_json_and_the_readme_table_are_made_from_the_declarations():
    from relay import settings_docs
    from relay.config import DOCUMENTED_GROUPS

    remake = "made from the declarations: run ./run python -m relay.settings_docs"
    assert (ROOT / ".env.example").read_text() == settings_docs.env_example(DOCUMENTED_GROUPS), remake
    assert json.loads((ROOT / "app.json").read_text())["env"] == settings_docs.app_json_env(DOCUMENTED_GROUPS), remake
    readme = (ROOT / "README.md").read_text()
    assert settings_docs.readme_with_table(readme, settings_docs.readme_table(DOCUMENTED_GROUPS)) == readme, remake


def test_a_changed_declaration_changes_all_three_files(tmp_path):
    import dataclasses

    from relay import settings_docs
    from relay.config import DOCUMENTED_GROUPS
    from relay.core_settings import SECURITY

    for name in (".env.example", "app.json", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert settings_docs.write(DOCUMENTED_GROUPS, tmp_path) == []
    [hops, *others] = SECURITY.settings
    changed = dataclasses.replace(SECURITY, settings=(dataclasses.replace(hops, doc="routers trusted", default="2"),
                                                      *others))
    groups = [changed if group is SECURITY else group for group in DOCUMENTED_GROUPS]

    assert settings_docs.write(groups, tmp_path) == [".env.example", "app.json", "README.md"]
    assert "# Routers trusted. Default: 2.\nRELAY_PROXY_HOPS=2\n" in (tmp_path / ".env.example").read_text()
    assert json.loads((tmp_path / "app.json").read_text())["env"]["RELAY_PROXY_HOPS"] == {
        "description": "Routers trusted. Default: 2.", "required": False, "value": "2"}
    readme = (tmp_path / "README.md").read_text()
    assert "\n| `RELAY_PROXY_HOPS` | `2` | routers trusted |\n" in readme
    assert len(readme.splitlines()) == len((ROOT / "README.md").read_text().splitlines())


# --- .env and empty values ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
RELAY = str(Path(sys.executable).with_name("relay"))
# What a developer's shell may hold that would make these runs use other services.
CONFIGURED_ELSEWHERE = {"DATABASE_URL", "REDIS_URL", "SPRIG_API_KEY", "SPRUCE_API_TOKEN", "SPARKLOOP_API_KEY",
                        "SPARKLOOP_WEBHOOK_TOKEN", "RELAY_INSTANCE_PATH"}


def clean_environment(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CONFIGURED_ELSEWHERE} | extra


def test_config_reads_only_declared_variables():
    """Every variable the configuration modules name is declared (or is the platform's commit, read for
    SENTRY_RELEASE's default), and VARIABLES is what load_config reads."""
    import re

    from relay.config import DESTINATION_GROUPS, DOCUMENTED_GROUPS, VARIABLES
    from relay.core_settings import CORE_GROUPS, RELEASE_VARIABLES

    declared = {setting.name for group in DOCUMENTED_GROUPS for setting in group.settings}
    for path in ("relay/config.py", "relay/core_settings.py", "workers/sprig/settings.py", "workers/spruce/settings.py"):
        named = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', (ROOT / path).read_text()))
        assert named - declared - set(RELEASE_VARIABLES) <= {"DEV_WEBHOOK_TOKEN", "VARIABLES"}, path
    assert set(VARIABLES) == {s.name for group in CORE_GROUPS + DESTINATION_GROUPS for s in group.settings}
    assert [group.name for group in DESTINATION_GROUPS] == ["sprig", "spruce"]
    assert len(declared) == sum(len(group.settings) for group in DOCUMENTED_GROUPS), "a variable declared twice"


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


def test_a_relay_that_finds_no_destination_refuses_to_start(monkeypatch):
    """Sprig and Spruce are entry points of Relay's installed package: a checkout run without
    installing it would otherwise start with nowhere to deliver."""
    import relay.destinations

    monkeypatch.setattr(relay.destinations.metadata, "entry_points", lambda group: [])
    with pytest.raises(ConfigError, match="no destination found: Relay is not installed"):
        config()
