"""The Alerts drill, small: a real worker process decides and sends the held, breaker,
backlog-age and daily-budget alerts (testbed/drills/alerts.py has the phases) to a loopback
Standard Webhooks receiver and a Slack stand-in: each opened once, then resolved once, every
webhook signed, every Slack body one line with a link to the console, no personal value of the
webhooks posted in any body. No beat: the drill sends beat's tasks to the worker itself, the
sweep once and the alert check every second (beat's is every 30 s, no setting). A redis-server
of its own. bench/drills/alerts.py runs it at full size, with beat."""

from __future__ import annotations

from standardwebhooks.webhooks import Webhook

from testbed.alert_sinks import WEBHOOK_SECRET
from testbed.drills.alerts import EXPECTED, PUBLIC_URL, alerts_drill
from testbed.privacy import leaked


def test_each_alert_reaches_both_sinks_once_opened_and_once_resolved_signed_and_without_personal_data(
    drill_for, sandbox, redis_server
):
    drill = drill_for("relay_drill_alerts", redis_server.url)
    run = alerts_drill(drill, sandbox, subscribers=6, check_every_s=1.0, backlog_age="3s", cooldown="2s", beat=False)

    statuses = run.statuses()  # a backlog alert for Spruce too, on a loaded machine (testbed.drills.alerts)
    assert set(EXPECTED) <= set(statuses) and {t for t, _ in statuses} == {t for t, _ in EXPECTED}, run.alerts()
    assert all(each == ["opened", "resolved"] for each in statuses.values()), run.alerts()
    assert len(run.slack) == len(run.webhook) == 2 * len(statuses)
    assert {post.answered for post in run.webhook + run.slack} == {200}
    budget = next(post.json["data"] for post in run.webhook if post.json["data"]["type"] == "daily_budget")
    assert budget["level"] == 80 and 80 <= budget["facts"]["percent_used"] < 90, budget

    verifier = Webhook(WEBHOOK_SECRET)
    for post in run.webhook:
        assert verifier.verify(post.body, post.headers) == post.json
        assert post.headers["webhook-id"] == post.json["data"]["id"]

    lines = [post.json["text"] for post in run.slack]
    assert all("\n" not in line for line in lines), lines
    assert all(f"<{PUBLIC_URL}/console/" in line and line.endswith("|open the console>") for line in lines), lines
    assert sorted(line.split(":")[1] for line in lines) == sorted(["large_green_circle", "red_circle"] * len(statuses))

    everything = "\n".join(post.body.decode() for post in run.webhook + run.slack)
    assert run.personal and not sorted(value for value in run.personal if leaked(value, everything))
