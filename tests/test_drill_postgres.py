"""PostgreSQL restarts during a stream of webhooks: the web answers 503 while it is away,
SparkLoop's retries get 200 afterwards, every event is done within 60 s of its return and
nothing is done twice. bench/drills/postgres_restarted.py runs it at full size."""
from __future__ import annotations

import pytest

from testbed.drills.processes import TcpProxy
from testbed.drills.scenarios import postgres_restarted
from testbed.drills.verdicts import HEAL_WITHIN_S
from testbed.services import PG_URL


@pytest.fixture
def proxy():
    running = TcpProxy(int(PG_URL.rsplit(":", 1)[1].split("/")[0]))
    yield running
    running.stop()


def test_postgres_restarted_loses_and_duplicates_nothing(drill_for, sandbox, redis_url, proxy):
    drill = drill_for("relay_drill_postgres", redis_url.rsplit("/", 1)[0] + "/6")
    healed = postgres_restarted(drill, sandbox, proxy, subscribers=60, down_s=10)
    assert healed.healed_s is not None and healed.healed_s <= HEAL_WITHIN_S, (healed, drill.logs())
    assert set(healed.answers) <= {200, 503} and healed.answers.get(503), healed
    assert healed.duplicates == [], healed
    assert healed.dead == [], (healed, drill.logs())
