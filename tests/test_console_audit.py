"""The console's Audit log page: sign-ins (failed ones too), sign-outs and CLI actions appear,
newest first, with who, interface, address, action, targets and outcome; filters by person and
action; keyset paging by id; viewers see it; bad filters get a 400 page naming the problem.
Through Flask's test client on the real store (SQLite and PostgreSQL) and Redis."""
from __future__ import annotations

from html.parser import HTMLParser

from operations import audit
from operations.audit import ACTIONS, Actor
from relay.runtime import Runtime
from testbed.console import PASSWORD, make_account, post_form, sign_in
from web.cli import main

LOG = "/console/audit"


class AuditTable(HTMLParser):
    """The audit table's rows (each cell's text, spaces folded) and every link's href."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: dict[str, str] = {}
        self._in_body = False
        self._cell: list[str] | None = None
        self._link: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "a":
            self._link = dict(attrs).get("href")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._link is not None and data.strip():
            self.links[data.strip()] = self._link
            self._link = None


def audit_page(client, query: str = "") -> AuditTable:
    answer = client.get(LOG + query)
    assert answer.status_code == 200, answer.data
    return AuditTable(answer.text)


def who_what(table: AuditTable) -> list[tuple[str, str, str, str, str]]:
    """(who, interface, address, action, outcome) of each row, as shown."""
    return [(row[1], row[2], row[3], row[4], row[6]) for row in table.rows]


def test_sign_ins_failed_sign_ins_and_sign_outs_appear_newest_first(console_app, viewer):
    make_account(console_app, "ann@clinic.example", "operator")
    ann = console_app.test_client()
    assert sign_in(ann, "ann@clinic.example", "not her password").status_code == 401
    # An email field can hold anything: a subscriber's address is never what the log names.
    assert sign_in(ann, "john.doe@email.com", PASSWORD).status_code == 401
    assert sign_in(ann, "Ann@Clinic.Example").status_code == 302
    assert post_form(ann, "/console/sign-out", page="/console/").status_code == 302

    page = audit_page(viewer)

    assert who_what(page)[:4] == [
        ("ann@clinic.example", "console", "127.0.0.1", "console.sign-out", "ok"),
        ("ann@clinic.example", "console", "127.0.0.1", "console.sign-in", "ok"),
        ("unknown account", "console", "127.0.0.1", "console.sign-in", "refused: wrong email or password"),
        ("ann@clinic.example", "console", "127.0.0.1", "console.sign-in", "refused: wrong email or password"),
    ]
    # Before them: the viewer's own sign-in, and the accounts made.
    assert ("viewer@example.org", "console", "127.0.0.1", "console.sign-in", "ok") in who_what(page)
    assert ("test-suite", "cli", "–", "users.add", "ok") in who_what(page)
    assert [row[5] for row in page.rows if row[4] == "users.add"][0] == "account ann@clinic.example role operator"
    assert all(row[0][:4].isdigit() and len(row[0]) == 19 for row in page.rows)  # 2026-01-02 14:02:11
    assert "john.doe@email.com" not in viewer.get(LOG).text


def test_a_cli_action_appears_with_interface_cli(console_app, operator):
    result = console_app.test_cli_runner().invoke(
        main, ["users", "add", "bea@clinic.example", "--role", "viewer", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    cli_user = Actor.cli(Runtime.of(console_app).config.operator).name

    [newest, *_] = audit_page(operator).rows

    assert newest[1:5] == [cli_user, "cli", "–", "users.add"]
    assert newest[5:] == ["account bea@clinic.example role viewer", "ok"]


def test_event_ids_link_to_their_event_and_long_lists_are_counted(console_app, operator):
    runtime = Runtime.of(console_app)
    with audit.audited(runtime, Actor("lead", "cli"), "events.replay") as entry:
        entry.ids("events", [7, 9])
        entry.ids("deliveries", [13, 14])
        entry.details |= {"force": False, "destination": None, "skipped": 0}
    with audit.audited(runtime, Actor("lead", "cli"), "events.replay") as entry:
        entry.ids("events", range(1, 26))

    page = audit_page(operator, "?action=events")

    assert [row[5] for row in page.rows] == [
        "events 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 (+15 more)",
        "events 7, 9 deliveries 13, 14 force no, skipped 0",
    ]
    assert page.links["9"] == "/console/events/9" and page.links["10"] == "/console/events/10"
    assert "13" not in page.links  # a delivery id is no event


def test_filters_by_person_and_by_action_or_its_group(console_app, operator, viewer):
    runtime = Runtime.of(console_app)
    audit.record(runtime, Actor("lead", "cli"), "events.reveal", {"events": [1]})
    audit.record(runtime, Actor("lead", "cli"), "keys.rotate", outcome=audit.FAILED, reason="StoreError")
    make_account(console_app, "ann@clinic.example", "viewer")

    assert who_what(audit_page(viewer, "?person=lead")) == [
        ("lead", "cli", "–", "keys.rotate", "failed: StoreError"),
        ("lead", "cli", "–", "events.reveal", "ok"),
    ]
    assert {row[4] for row in audit_page(viewer, "?action=users").rows} == {"users.add"}
    signed_in = audit_page(viewer, "?action=console.sign-in&person=+viewer@example.org+")
    assert who_what(signed_in) == [("viewer@example.org", "console", "127.0.0.1", "console.sign-in", "ok")]
    assert audit_page(viewer, "?person=nobody").rows == []
    assert "No audit entry matches." in viewer.get(LOG + "?person=nobody").text
    # The form keeps what was chosen.
    page = viewer.get(LOG + "?action=keys.rotate&person=lead").text
    assert '<option value="keys.rotate" selected>' in page and 'value="lead"' in page


def test_every_action_the_operations_record_can_be_chosen(console_app, viewer):
    """ACTIONS is the filter's list: each action an operation records (the literal names passed
    to `audited` and `record` in operations/) is in it, and each one is offered."""
    import re
    from pathlib import Path

    operations = Path(audit.__file__).parent
    recorded = set()
    for path in operations.glob("*.py"):
        recorded |= set(re.findall(r'(?:audited|record)\(\s*[^"\n]*?"([a-z-]+\.[a-z-]+)"', path.read_text()))
    assert recorded and recorded <= set(ACTIONS), recorded - set(ACTIONS)
    page = viewer.get(LOG).text
    assert all(f'<option value="{action}"' in page for action in ACTIONS)
    assert '<label for="person">Person</label>' in page and '<label for="action">Action</label>' in page


def test_keyset_paging_older_and_newer_by_id(console_app, operator):
    runtime = Runtime.of(console_app)
    for n in range(120):
        audit.record(runtime, Actor("pager", "cli"), "events.reveal", {"events": [n + 1]})

    def events_shown(table: AuditTable) -> list[int]:
        return [int(row[5].split()[1]) for row in table.rows]

    first = audit_page(operator, "?person=pager")
    assert events_shown(first) == list(range(120, 70, -1))
    assert "Newer" not in first.links
    second = audit_page(operator, first.links["Older"].removeprefix(LOG))
    assert events_shown(second) == list(range(70, 20, -1))
    third = audit_page(operator, second.links["Older"].removeprefix(LOG))
    assert events_shown(third) == list(range(20, 0, -1)) and "Older" not in third.links
    back = audit_page(operator, third.links["Newer"].removeprefix(LOG))
    assert events_shown(back) == events_shown(second)
    assert "person=pager" in back.links["Newer"]
    assert events_shown(audit_page(operator, back.links["Newer"].removeprefix(LOG))) == events_shown(first)


def test_bad_filters_get_a_400_page_naming_the_problem(console_app, viewer):
    for query, problem in [
        ("?action=events.delete", "Unknown action"),
        ("?action=%25", "Unknown action"),
        ("?before=abc", "before must be an audit entry&#39;s id"),
        ("?after=0", "after must be an audit entry&#39;s id"),
        ("?before=99999999999999999999", "before must be an audit entry&#39;s id"),
        ("?before=%D9%A3", "before must be an audit entry&#39;s id"),  # an Arabic-Indic 3: a digit, not ASCII
        ("?before=5&after=2", "not both"),
        ("?person=" + "x" * 255, "Person is too long"),
    ]:
        answer = viewer.get(LOG + query)
        assert answer.status_code == 400, query
        assert problem in answer.text, (query, answer.text)


def test_only_signed_in_people_see_it(console_app):
    answer = console_app.test_client().get(LOG)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/sign-in")
