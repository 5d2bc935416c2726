"""docker-compose.yml, read with a YAML parser (no docker on these machines): the services a
production-like run needs, each Relay process with the Procfile's command, web's healthcheck on
/readyz, restart policies, the sandbox standing in for every vendor Relay calls (SparkLoop's API
too, for `relay backfill` and `relay doctor`), and only variables Relay reads."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from relay.config import VARIABLES
from sandbox import SandboxSettings
from sandbox.spruce import MEMBERS

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
SANDBOX = "http://sandbox:8025"


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else command


def test_every_service_is_there(services):
    assert set(services) == {"db", "redis", "sandbox", "release", "web", "worker", "beat"}


@pytest.mark.parametrize("process", sorted(PROCFILE))
def test_each_relay_process_runs_the_procfiles_command(services, process):
    assert argv(services[process]["command"]) == shlex.split(PROCFILE[process])


def test_web_is_healthy_when_readyz_answers(services):
    check = services["web"]["healthcheck"]
    assert check["test"][0] == "CMD" and "http://127.0.0.1:8000/readyz" in " ".join(check["test"])
    assert {"interval", "timeout", "retries"} <= set(check)
    assert services["db"]["healthcheck"]["test"]


def test_long_running_services_restart_and_the_release_step_does_not(services):
    restarts = {name: service.get("restart") for name, service in services.items()}
    assert restarts.pop("release") == "no"
    assert restarts == dict.fromkeys(restarts, "unless-stopped")


def test_relay_processes_set_only_variables_relay_reads(services):
    relay = {name: service for name, service in services.items() if service.get("image") == "relay:local"
             and name != "sandbox"}
    assert set(relay) == set(PROCFILE)
    for name, service in relay.items():
        assert set(service["environment"]) <= set(VARIABLES), name


def test_every_vendor_is_the_sandbox_with_its_credentials(services):
    env, settings = services["web"]["environment"], SandboxSettings()
    assert (env["SPRIG_API_URL"], env["SPRIG_API_KEY"]) == (f"{SANDBOX}/sprig", settings.sprig_api_key)
    assert (env["SPRUCE_API_URL"], env["SPRUCE_API_TOKEN"]) == (f"{SANDBOX}/spruce/v1", settings.spruce_api_token)
    assert (env["SPARKLOOP_API_URL"], env["SPARKLOOP_API_KEY"]) == (f"{SANDBOX}/sparkloop/v2",
                                                                    settings.sparkloop_api_key)
    # A member the sandbox's organization has, so that `relay doctor` passes its check.
    assert set(env["SPRUCE_NOTE_MEMBER_IDS"].split(",")) <= {m["id"] for m in MEMBERS if not m.get("isSuspended")}
    assert argv(services["sandbox"]["command"])[-2:] == ["--port", "8025"]
