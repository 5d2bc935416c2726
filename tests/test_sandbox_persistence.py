"""A sandbox with a state file (`relay dev`'s) outlives a restart: the vendors' records, the ids it
handed out and Spruce's idempotency keys come back; the switches and the request log do not."""
from __future__ import annotations

import json
import logging

import httpx

from sandbox import SandboxSettings, serve_in_thread

SPRIG_AUTH = {"Authorization": "API-Key sandbox-sprig-key"}
SPRUCE_AUTH = {"Authorization": "Bearer sandbox-spruce-token"}
TIMEOUT = 5


def started(path):
    return serve_in_thread("127.0.0.1", 0, settings=SandboxSettings(state_file=str(path)))


def records(snapshot: dict) -> dict:
    return {name: value for name, value in snapshot.items() if name not in ("requests", "budgets")}


def test_a_restarted_sandbox_knows_every_record_id_and_idempotency_key_it_had(tmp_path):
    path = tmp_path / "sandbox-state.json"
    with started(path) as box:
        box.configure(faults=[{"vendor": "sprig", "status": 500, "times": 5, "path": "/v2/nothing"}])
        with httpx.Client(base_url=box.spruce_url, headers=SPRUCE_AUTH, timeout=TIMEOUT) as spruce:
            contact = spruce.post("/contacts", headers={"s-idempotency-key": "contact-1"},
                                  json={"emailAddresses": [{"value": "ann@example.com"}]}).json()
            conversation = spruce.post("/conversations", headers={"s-idempotency-key": "conversation-1"}, json={
                "type": "note", "note": {"associatedContactIds": [contact["id"]]}}).json()["conversation"]
        assert httpx.post(f"{box.sprig_url}/v2/users", headers=SPRIG_AUTH, timeout=TIMEOUT, json={
            "userId": "ann@example.com", "attributes": {"plan": "gold"}}).status_code == 202
        box.add_sparkloop_subscribers([{"email": "bob@example.com"}])
        before = records(box.snapshot())
    assert json.loads(path.read_text())["records"]["contacts"]  # written as it changed, and at stop

    with started(path) as box:
        assert records(box.snapshot()) == before
        assert box.snapshot()["requests"] == [] and box.state.config()["faults"] == []  # switches start afresh
        assert box.snapshot()["budgets"]["spruce"]["windows"] == {"minute": [], "day": []}  # and the windows
        with httpx.Client(base_url=box.spruce_url, headers=SPRUCE_AUTH, timeout=TIMEOUT) as spruce:
            assert spruce.get(f"/contacts/{contact['id']}").status_code == 200
            assert spruce.get(f"/conversations/{conversation['id']}").status_code == 200
            reused = spruce.post("/contacts", headers={"s-idempotency-key": "contact-1"},
                                 json={"emailAddresses": [{"value": "ann@example.com"}]})
            assert reused.status_code == 422  # Spruce keeps a key 24 hours, restarts or not
            another = spruce.post("/contacts", headers={"s-idempotency-key": "contact-2"},
                                  json={"emailAddresses": [{"value": "cy@example.com"}]}).json()
        assert another["id"] > contact["id"]  # no id handed out again

        box.reset()  # POST /_sandbox/reset empties the file as well
    assert json.loads(path.read_text())["records"]["contacts"] == {}


def test_an_unreadable_state_file_is_set_aside_and_the_sandbox_starts_empty(tmp_path, caplog):
    path = tmp_path / "sandbox-state.json"
    path.write_text('{"version": 1, "records": ')

    with caplog.at_level(logging.ERROR, logger="sandbox"), started(path) as box:
        assert box.snapshot()["spruce"]["contacts"] == []
    [record] = [r for r in caplog.records if r.name == "sandbox"]
    assert "starting empty" in record.getMessage()
    assert (tmp_path / "sandbox-state.json.unreadable").read_text() == '{"version": 1, "records": '
    assert json.loads(path.read_text())["version"] == 1  # saved again at stop, whole


def test_without_a_state_file_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with serve_in_thread("127.0.0.1", 0) as box:
        box.add_sparkloop_subscribers([{"email": "bob@example.com"}])
        assert box.state_file is None
    assert list(tmp_path.iterdir()) == []
