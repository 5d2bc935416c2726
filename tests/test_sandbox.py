"""The sandbox keeps the vendors' documented rules, over real HTTP."""
from __future__ import annotations

import httpx
import pytest

SPRIG_AUTH = {"Authorization": "API-Key sandbox-sprig-key"}
SPRUCE_AUTH = {"Authorization": "Bearer sandbox-spruce-token"}


@pytest.fixture
def box(sandbox):
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def test_sprig_rejects_a_bad_key_with_403_and_no_body(box):
    response = httpx.post(f"{box.sprig_url}/v2/users", json={"userId": "u1"},
                          headers={"Authorization": "Bearer sandbox-sprig-key"})
    assert (response.status_code, response.content) == (403, b"")


@pytest.mark.parametrize("body, message", [
    ({}, "userId"),
    ({"userId": "u1", "events": [{"event": "e", "timestamp": 1626448859}]}, "milliseconds"),
    ({"userId": "u1", "attributes": {"nested": {"a": 1}}}, "attribute values"),
    ({"userId": "u1", "attributes": {f"a{i}": "x" for i in range(101)}}, "100 values"),
])
def test_sprig_validates_the_upsert_body(box, body, message):
    response = httpx.post(f"{box.sprig_url}/v2/users", json=body, headers=SPRIG_AUTH)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_sprig_upsert_is_202_and_counts_repeated_events(box):
    body = {"userId": "u1", "attributes": {"plan": "pro"},
            "events": [{"event": "signup", "timestamp": 1626448859836}]}
    for _ in range(2):
        response = httpx.post(f"{box.sprig_url}/v2/users", json=body, headers=SPRIG_AUTH)
        assert (response.status_code, response.content) == (202, b"")
    user = httpx.get(f"{box.sprig_url}/v2/users/u1", headers=SPRIG_AUTH).json()
    assert user["externalUserId"] == "u1" and user["attributes"] == {"plan": "pro"}
    assert user["events"][0]["count"] == 2
    assert httpx.get(f"{box.sprig_url}/v2/users/nobody", headers=SPRIG_AUTH).status_code == 404


def test_spruce_errors_use_the_documented_body_and_carry_a_request_id(box):
    forbidden = httpx.get(f"{box.spruce_url}/contacts", headers={"Authorization": "Bearer nope"})
    assert forbidden.status_code == 403
    assert set(forbidden.json()) == {"statusCode", "type", "message"}
    assert len(forbidden.headers["s-request-id"]) == 26
    missing = httpx.get(f"{box.spruce_url}/no/such/route", headers=SPRUCE_AUTH)
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404
    wrong_method = httpx.delete(f"{box.spruce_url}/contacts/search", headers=SPRUCE_AUTH)
    assert wrong_method.status_code == 405


def test_spruce_create_contact_needs_a_name_phone_or_email(box):
    response = httpx.post(f"{box.spruce_url}/contacts", json={"category": "patient"},
                          headers=SPRUCE_AUTH | {"s-idempotency-key": "k1"})
    assert response.status_code == 400 and response.json()["type"] == "BAD_PARAMETER"


def test_spruce_idempotency_key_is_per_path_and_only_burnt_by_success(box):
    headers = SPRUCE_AUTH | {"s-idempotency-key": "same-key"}
    body = {"givenName": "Ann", "emailAddresses": [{"value": "ann@example.com"}]}
    assert httpx.post(f"{box.spruce_url}/contacts", json={}, headers=headers).status_code == 400
    assert httpx.post(f"{box.spruce_url}/contacts", json=body, headers=headers).status_code == 201
    duplicate = httpx.post(f"{box.spruce_url}/contacts", json=body, headers=headers)
    assert duplicate.status_code == 422 and duplicate.json()["type"] == "duplicate_request"
    contact_id = httpx.post(f"{box.spruce_url}/contacts/search", headers=SPRUCE_AUTH, json={
        "structured": {"emailAddressFilter": [{"match": "any", "values": ["ANN@example.com"]}]},
    }).json()["contacts"][0]["id"]
    conversation = httpx.post(f"{box.spruce_url}/conversations", headers=headers, json={
        "type": "note", "note": {"associatedContactIds": [contact_id]}})
    assert conversation.status_code == 201  # the same key on another path is not a duplicate
    too_long = SPRUCE_AUTH | {"s-idempotency-key": "k" * 256}
    assert httpx.post(f"{box.spruce_url}/contacts", json=body, headers=too_long).status_code == 400


def test_spruce_note_messages_must_be_internal(box):
    contact = httpx.post(f"{box.spruce_url}/contacts", headers=SPRUCE_AUTH | {"s-idempotency-key": "c"},
                         json={"givenName": "Ann"}).json()
    conversation = httpx.post(
        f"{box.spruce_url}/conversations", headers=SPRUCE_AUTH | {"s-idempotency-key": "t"},
        json={"type": "note", "note": {"associatedContactIds": [contact["id"]]}},
    ).json()["conversation"]
    url = f"{box.spruce_url}/conversations/{conversation['id']}/messages"
    message = {"body": [{"type": "text", "value": "hello"}]}
    assert httpx.post(url, json=message, headers=SPRUCE_AUTH | {"s-idempotency-key": "m1"}).status_code == 400
    posted = httpx.post(url, json=message | {"internal": True}, headers=SPRUCE_AUTH | {"s-idempotency-key": "m2"})
    assert posted.json()["requestId"].startswith("asyncRequest_")
    listed = httpx.get(f"{box.spruce_url}/contacts/{contact['id']}/conversations", headers=SPRUCE_AUTH)
    assert [c["id"] for c in listed.json()["conversations"]] == [conversation["id"]]


def test_spruce_pages_and_bounds_page_size(box):
    for i in range(5):
        httpx.post(f"{box.spruce_url}/contacts", json={"givenName": f"N{i}"},
                   headers=SPRUCE_AUTH | {"s-idempotency-key": f"c{i}"})
    seen, token = [], None
    for _ in range(10):
        params = {"pageSize": 2} | ({"paginationToken": token} if token else {})
        page = httpx.get(f"{box.spruce_url}/contacts", params=params, headers=SPRUCE_AUTH).json()
        seen += [c["givenName"] for c in page["contacts"]]
        token = page.get("paginationToken")
        if not page["hasMore"]:
            break
    assert seen == [f"N{i}" for i in range(5)] and page["totalCount"] == 5 and token is None
    assert httpx.get(f"{box.spruce_url}/contacts", params={"pageSize": 501},
                     headers=SPRUCE_AUTH).status_code == 400


def test_spruce_rate_limit_headers_and_429(box):
    httpx.post(f"{box.url}/_sandbox/config", json={"rate_limit": {"spruce": {"limit": 2}}})
    first = httpx.get(f"{box.spruce_url}/contacts", headers=SPRUCE_AUTH)
    assert (first.headers["s-ratelimit-limit"], first.headers["s-ratelimit-remaining"]) == ("2", "1")
    httpx.get(f"{box.spruce_url}/contacts", headers=SPRUCE_AUTH)
    throttled = httpx.get(f"{box.spruce_url}/contacts", headers=SPRUCE_AUTH)
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60


def test_control_api_injects_faults_counts_and_resets(box):
    response = httpx.post(f"{box.url}/_sandbox/config", json={"faults": [
        {"vendor": "sprig", "status": 500, "times": 1, "method": "POST", "path_prefix": "/v2/users"}]})
    assert response.status_code == 200
    body = {"userId": "u1"}
    assert httpx.post(f"{box.sprig_url}/v2/users", json=body, headers=SPRIG_AUTH).status_code == 500
    assert httpx.post(f"{box.sprig_url}/v2/users", json=body, headers=SPRIG_AUTH).status_code == 202
    assert httpx.get(f"{box.url}/_sandbox/stats").json() == {"sprig": {"500": 1, "202": 1}}
    assert httpx.post(f"{box.url}/_sandbox/config", json={"bogus": 1}).status_code == 400
    httpx.post(f"{box.url}/_sandbox/reset")
    assert httpx.get(f"{box.url}/_sandbox/state").json()["sprig"]["users"] == {}
