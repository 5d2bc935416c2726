"""`relay events list --follow`: new events and delivery outcomes, one line each, as they happen,
from the store, with no payload value in them."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from contextlib import contextmanager

import pytest

from operations.filters import EventFilter
from operations.follow import Follower
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.apps import deliver, deliveries, delivery_to, make_due, post_event, run_pending
from testbed.examples import load_fixture
from testbed.privacy import leaked
from testbed.waiting import wait_for
from testbed.dev_processes import RELAY
from web.cli import main
from web.cli.follow import follow, stop_after

CLOCK = re.compile(r"^\d\d:\d\d:\d\d  ")
FOLLOWING = "following new events and delivery outcomes (times in UTC; Ctrl-C stops)"


def followed(app, steps, filters: EventFilter = EventFilter()) -> list[str]:
    """The lines follow() emits while `steps` run, one before each poll (in place of its wait);
    the clock is checked and dropped."""
    lines: list[str] = []
    with app.app_context():
        follower = Follower(Runtime.of(app), filters)
        pending = iter(steps)
        follow(follower, lines.append, stop_after(len(steps)), sleep=lambda _s: next(pending)())
    assert all(CLOCK.match(line) for line in lines), lines
    return [line[10:] for line in lines]


def run_each_once(app) -> None:
    for d in deliveries(app):
        if d.status == "pending":
            deliver(app, d.id)


def test_new_events_then_each_outcome_as_it_happens(app, sandbox):
    payload = load_fixture("reward_redeemed")
    client = app.test_client()

    def spruce_fails_once():
        sandbox.configure(faults=[{"vendor": "spruce", "status": 503, "times": 1, "message": "down for maintenance"}])
        run_each_once(app)

    def spruce_again():
        make_due(app)
        deliver(app, delivery_to(app, "spruce").id)

    lines = followed(app, [
        lambda: post_event(client, payload),
        spruce_fails_once,
        spruce_again,
        lambda: None,  # nothing new: nothing printed
    ])

    assert lines[0] == "webhook  reward_redeemed  event 1  received"
    assert lines[1] == "sprig  event 1  delivered (1 attempt)" or lines[2] == "sprig  event 1  delivered (1 attempt)"
    [retry] = [line for line in lines if line.startswith("spruce  event 1  will retry at ")]
    assert re.search(r"\(attempt 1, HTTP 503\): .*down for maintenance", retry), retry
    assert lines[3] == "spruce  event 1  delivered (2 attempts)"
    assert len(lines) == 4
    assert not [value for value in personal_strings(payload) if leaked(value, "\n".join(lines))], lines


def test_outcomes_of_older_events_and_replays_are_shown_too(app, sandbox):
    client = app.test_client()
    assert post_event(client, load_fixture("new_referral")).status_code == 200  # pending, before following
    assert post_event(client, load_fixture("reward_unlocked")).status_code == 200
    deliver(app, delivery_to(app, "sprig").id)  # event 1's sprig: done before following

    def replay(event_id: str):
        result = app.test_cli_runner().invoke(main, ["events", "replay", event_id, "--destination", "sprig",
                                                     "--force", "--yes"])
        assert result.exit_code == 0, result.output

    def fails_at_once():  # replayed and failed between two polls
        sandbox.configure(faults=[{"vendor": "sprig", "status": 400, "times": 5, "message": "attribute refused"}])
        replay("2")
        run_pending(app)

    lines = followed(app, [lambda: run_each_once(app), lambda: replay("1"), lambda: run_pending(app),
                           fails_at_once, lambda: None])

    assert "webhook" not in "\n".join(lines)  # no new event
    assert sorted(lines[:3]) == ["sprig  event 2  delivered (1 attempt)", "spruce  event 1  delivered (1 attempt)",
                                 "spruce  event 2  delivered (1 attempt)"]
    assert re.fullmatch(r"sprig  event 1  (delivered|superseded: .*) \(\d+ attempts?\)", lines[3]), lines
    assert re.fullmatch(r"sprig  event 2  failed \(\d+ attempts?, HTTP 400\): .*attribute refused.*", lines[4]), lines
    assert len(lines) == 5  # the failure once, though two polls' windows hold it


def test_type_and_destination_narrow_what_is_followed(app, sandbox):
    client = app.test_client()

    def both_types_delivered():
        assert post_event(client, load_fixture("new_referral")).status_code == 200
        assert post_event(client, load_fixture("reward_unlocked")).status_code == 200
        run_pending(app)

    lines = followed(app, [both_types_delivered], EventFilter(types=("reward_unlocked",), destination="spruce"))

    assert lines == ["webhook  reward_unlocked  event 2  received", "spruce  event 2  delivered (1 attempt)"] or \
        lines == ["webhook  reward_unlocked  event 2  done", "spruce  event 2  delivered (1 attempt)"]


def test_stop_after_bounds_the_loop():
    should_stop = stop_after(2)
    assert [should_stop() for _ in range(4)] == [False, False, True, True]
    assert stop_after(None)() is False


def test_the_command_lists_then_follows_until_ctrl_c(app, environ, sandbox, tmp_path):
    client = app.test_client()
    assert post_event(client, load_fixture("reward_unlocked")).status_code == 200
    run_pending(app)
    terminal = tmp_path / "terminal"
    env = {**os.environ, **environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    with following(env, terminal) as command:
        assert post_event(client, load_fixture("new_referral")).status_code == 200
        run_pending(app)
        assert wait_for(lambda: terminal.read_text().count("event 2  delivered") == 2, timeout=30), \
            terminal.read_text()
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=30) == 0, terminal.read_text()
    listed, _, live = terminal.read_text().partition(FOLLOWING + "\n")
    assert "reward_unlocked" in listed and "new_referral" not in listed
    *followed_lines, last = live.splitlines()
    assert last == "stopped following", live
    shown = [line[10:] for line in followed_lines]
    assert re.fullmatch(r"webhook  new_referral  event 2  (received|processing|done)", shown[0]), live
    assert sorted(shown[1:]) == ["sprig  event 2  delivered (1 attempt)", "spruce  event 2  delivered (1 attempt)"]
    assert "john.doe@email.com" not in terminal.read_text()


@pytest.mark.parametrize("args, named", [
    (["--follow", "--json"], "--json"),
    (["--follow", "--status", "failed"], "--status"),
    (["--follow", "--until", "1h"], "--until"),
    (["--follow", "--error", "503"], "--error"),
])
def test_bad_combinations_are_one_line_and_exit_2(bare_app, args, named):
    result = bare_app().test_cli_runner().invoke(main, ["events", "list", *args])
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and named in error_lines[0], result.output
    assert "following" not in result.output


def test_help_shows_follow_and_no_test_hook(bare_app):
    result = bare_app().test_cli_runner().invoke(main, ["events", "list", "--help"])
    assert result.exit_code == 0
    assert "--follow" in result.output and "--polls" not in result.output


def test_follow_has_no_hidden_test_hook(app):
    # The command follows until Ctrl-C; the tests stop it as an operator does.
    result = app.test_cli_runner().invoke(main, ["events", "list", "--follow", "--polls", "1"])
    assert result.exit_code == 2 and "No such option '--polls'" in result.output


def test_ctrl_c_stops_it_also_when_started_with_sigint_ignored(app, environ, tmp_path):
    # A shell's background job, or a parent that ignores SIGINT, hands that on to what it starts.
    terminal = tmp_path / "terminal"
    env = {**os.environ, **environ, "PYTHONUNBUFFERED": "1"}
    with following(env, terminal, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) as command:
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=30) == 0, terminal.read_text()
    assert terminal.read_text().splitlines()[-1] == "stopped following"


@contextmanager
def following(env: dict, terminal, **popen):
    """`relay events list --follow` writing to `terminal`, once it says it follows; ended by pid."""
    with terminal.open("w") as out:
        command = subprocess.Popen([RELAY, "events", "list", "--follow"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)
    try:
        assert wait_for(lambda: FOLLOWING in terminal.read_text(), timeout=60), terminal.read_text()
        yield command
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(timeout=10)
