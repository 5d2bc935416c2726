"""The sandbox keeps the vendors' documented rules (Sprig and Spruce API references), over real HTTP."""
from __future__ import annotations

import re
import select
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandbox import create_sandbox_app, serve_in_thread
from testbed.net import free_port

SPRIG_AUTH = {"Authorization": "API-Key sandbox-sprig-key"}
SPRUCE_AUTH = {"Authorization": "Bearer sandbox-spruce-token"}
SPARKLOOP_AUTH = {"X-Api-Key": "sandbox-sparkloop-key"}
TS = 1_700_000_000_000  # Unix milliseconds
TIMEOUT = 5


@pytest.fixture
def box(sandbox):
    sandbox.reset()
    yield sandbox
    sandbox.reset()


@pytest.fixture
def sprig(box):
    with httpx.Client(base_url=box.sprig_url, headers=SPRIG_AUTH, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def spruce(box):
    with httpx.Client(base_url=box.spruce_url, headers=SPRUCE_AUTH, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def sparkloop(box):
    with httpx.Client(base_url=box.sparkloop_url, headers=SPARKLOOP_AUTH, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def control(box):
    with httpx.Client(base_url=f"{box.url}/_sandbox", timeout=TIMEOUT) as client:
        yield client


def key() -> dict:
    return {"s-idempotency-key": f"test-{uuid.uuid4()}"}


def create_contact(spruce, **fields):
    body = fields or {"givenName": "Ann", "emailAddresses": [{"value": "ann@example.com"}]}
    response = spruce.post("/contacts", json=body, headers=key())
    assert response.status_code == 201, response.text
    return response.json()


def create_note(spruce, contact_id, **note):
    response = spruce.post("/conversations", headers=key(),
                           json={"type": "note", "note": {"associatedContactIds": [contact_id], **note}})
    assert response.status_code == 201, response.text
    return response.json()


def post_note(spruce, conversation_id, text, **extra):
    return spruce.post(f"/conversations/{conversation_id}/messages", headers=key(),
                       json={"body": [{"type": "text", "value": text}], "internal": True, **extra})


def wait_until(predicate, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# --- Sprig --------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sandbox-sprig-key"},
                                     {"Authorization": "API-Key wrong"}])
def test_sprig_rejects_missing_or_wrong_credentials_with_a_bodyless_403(box, headers):
    for method, path in (("POST", "/v2/users"), ("GET", "/v2/users/u1")):
        response = httpx.request(method, f"{box.sprig_url}{path}", json={"userId": "u1"}, headers=headers,
                                 timeout=TIMEOUT)
        assert (response.status_code, response.content) == (403, b"")
    assert box.snapshot()["sprig"]["users"] == {}


@pytest.mark.parametrize("body, message", [
    ({}, "userId"),
    ({"userId": ""}, "userId"),
    ({"userId": "u1", "email": "a@example.com"}, "unknown fields: email"),
    ({"userId": "u1", "emailAddress": "not-an-email"}, "emailAddress"),
    ({"userId": "u1", "events": [{"event": "e", "timestamp": 1_626_448_859}]}, "milliseconds"),
    ({"userId": "u1", "events": [{"event": "e", "timestamp": "1626448859836"}]}, "milliseconds"),
    ({"userId": "u1", "events": [{"event": "e", "timestamp": TS, "properties": {}}]}, "no event properties"),
    ({"userId": "u1", "attributes": {"nested": {"a": 1}}}, "attribute values"),
    ({"userId": "u1", "attributes": {"ratio": 0.5}}, "attribute values"),
    ({"userId": "u1", "attributes": {f"a{i}": "x" for i in range(101)}}, "100 values"),
])
def test_sprig_upsert_validation_answers_400_with_an_error_message(sprig, body, message):
    response = sprig.post("/v2/users", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_sprig_upsert_is_202_merges_attributes_and_counts_every_event(sprig, box):
    first = {"userId": "ann@example.com", "emailAddress": "ann@example.com",
             "attributes": {"plan": "pro", "referrals": 2, "vip": False},
             "events": [{"event": "signup", "timestamp": TS + 500}]}
    response = sprig.post("/v2/users", json=first)
    assert (response.status_code, response.content) == (202, b"")
    sprig.post("/v2/users", json=first)  # a retry counts the event again (Sprig counts each)
    sprig.post("/v2/users", json={"userId": "ann@example.com", "attributes": {"plan": "team"},
                                  "events": [{"event": "signup", "timestamp": TS},
                                             {"event": "login", "timestamp": TS}]})

    user = sprig.get("/v2/users/ann%40example.com").json()
    assert uuid.UUID(user["id"]) and user["externalUserId"] == "ann@example.com"
    assert isinstance(user["createdAt"], int) and "emailAddress" not in user
    assert user["attributes"] == {"plan": "team", "referrals": 2, "vip": False}
    events = {e["event"]: e for e in user["events"]}
    assert events["signup"] == {"event": "signup", "count": 3, "createdAt": TS, "updatedAt": TS + 500}
    assert events["login"]["count"] == 1
    assert sprig.get("/v2/users/ann@example.com").json()["id"] == user["id"]
    assert box.snapshot()["sprig"]["users"]["ann@example.com"]["emailAddress"] == "ann@example.com"
    missing = sprig.get("/v2/users/nobody")
    assert (missing.status_code, missing.content) == (404, b"")


def test_sprig_user_ids_with_slashes_round_trip(sprig):
    assert sprig.post("/v2/users", json={"userId": "team/ann"}).status_code == 202
    assert sprig.get("/v2/users/team%2Fann").json()["externalUserId"] == "team/ann"


def test_sprig_rate_limit_is_a_fixed_window_per_key_with_ratelimit_reset(sprig, box):
    box.configure(rate_limit={"sprig": {"limit": 2, "window_s": 300}})
    assert [sprig.get("/v2/users/u1").status_code for _ in range(2)] == [404, 404]
    throttled = sprig.post("/v2/users", json={"userId": "u1"})
    assert (throttled.status_code, throttled.content) == (429, b"")
    assert 290 <= int(throttled.headers["ratelimit-reset"]) <= 300
    assert throttled.headers["Retry-After"] == throttled.headers["ratelimit-reset"]
    assert "s-ratelimit-limit" not in throttled.headers  # Spruce's headers, not Sprig's
    assert box.snapshot()["sprig"]["users"] == {}  # the refused upsert did nothing


# --- Spruce: auth, errors, routes ---------------------------------------------------------------


def test_spruce_rejects_a_bad_token_with_its_error_body_and_a_request_id(box):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "sandbox-spruce-token"}):
        response = httpx.get(f"{box.spruce_url}/contacts", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 403
        assert response.json() == {"statusCode": 403, "type": "forbidden",
                                   "message": "invalid or disabled credentials"}
        assert re.fullmatch(r"[A-Z0-9]{26}", response.headers["s-request-id"])


def test_spruce_unknown_routes_and_wrong_methods_use_the_error_body(spruce):
    first, second = spruce.get("/contacts"), spruce.get("/contacts")
    assert first.headers["s-request-id"] != second.headers["s-request-id"]
    missing = spruce.get("/no/such/route")
    assert missing.status_code == 404
    assert set(missing.json()) == {"statusCode", "type", "message"} and missing.json()["statusCode"] == 404
    assert "s-request-id" in missing.headers and "s-ratelimit-remaining" in missing.headers
    wrong_method = spruce.get("/contacts/search")
    assert wrong_method.status_code == 405 and wrong_method.json()["statusCode"] == 405
    assert "POST" in wrong_method.headers["Allow"]
    assert spruce.delete("/contacts").status_code == 405
    not_json = spruce.post("/contacts", content=b"<xml/>", headers=key())
    assert (not_json.status_code, not_json.json()["type"]) == (400, "BAD_PARAMETER")


# --- Spruce: contacts ---------------------------------------------------------------------------

ALWAYS_PRESENT = {"apiURL", "appURL", "canDelete", "canEdit", "category", "created", "customContactFields",
                  "displayName", "emailAddresses", "gender", "hasAccount", "hasPendingInvite", "id",
                  "integrationLinks", "internalMemberIds", "object", "organizationContactFields",
                  "phoneNumbers", "tags"}


def test_spruce_create_contact_returns_the_bare_contact_with_every_documented_field(spruce, box):
    contact = create_contact(spruce, category="patient", givenName="Joe", middleName="William",
                             familyName="Smith", emailAddresses=[{"value": "joe@example.com", "label": "Work"}],
                             phoneNumbers=[{"value": "(206) 555-1234", "label": "Mobile"}])
    assert ALWAYS_PRESENT <= set(contact)
    assert re.fullmatch(r"entity_[0-9A-Z]+", contact["id"]) and contact["object"] == "contact"
    assert contact["apiURL"] == f"{box.spruce_url}/contacts/{contact['id']}"
    assert contact["appURL"].endswith(f"/contact/{contact['id']}")
    assert contact["displayName"] == "Joe William Smith"
    [email] = contact["emailAddresses"]
    assert email["id"].startswith("entityContact_") and (email["value"], email["label"]) == ("joe@example.com", "Work")
    [phone] = contact["phoneNumbers"]
    assert (phone["value"], phone["displayValue"], phone["label"]) == ("+12065551234", "(206) 555-1234", "Mobile")
    assert spruce.get(f"/contacts/{contact['id']}").json() == contact  # bare, not wrapped
    assert create_contact(spruce, emailAddresses=[{"value": "only@example.com"}])["displayName"] == "only@example.com"


@pytest.mark.parametrize("body, message", [
    ({"category": "patient", "companyName": "Acme"}, "at least one of"),
    ({"givenName": "Ann", "category": "clinic"}, "category"),
    ({"emailAddresses": [{"value": "not-an-email"}]}, "email"),
    ({"emailAddresses": ["ann@example.com"]}, "emailAddresses[0]"),
    ({"phoneNumbers": [{"value": "12"}]}, "phone"),
    ({"givenName": "Ann", "dateOfBirth": "30/01/2000"}, "dateOfBirth"),
    ({"givenName": "Ann", "email": "ann@example.com"}, "unknown fields: email"),
    ({"givenName": "Ann", "tagIds": ["tag_1"]}, "tagIds"),
])
def test_spruce_create_contact_validation(spruce, body, message):
    response = spruce.post("/contacts", json=body, headers=key())
    assert response.status_code == 400
    assert response.json()["type"] == "BAD_PARAMETER" and message in response.json()["message"]


def test_spruce_patch_updates_only_the_given_fields(spruce):
    contact = create_contact(spruce)
    patched = spruce.patch(f"/contacts/{contact['id']}", headers=key(),
                           json={"familyName": "Lee", "givenName": None,
                                 "emailAddresses": [{"value": "ann@example.com"}, {"value": "ann@work.example"}]})
    assert patched.status_code == 200
    body = patched.json()
    assert (body["givenName"], body["familyName"], body["displayName"]) == ("Ann", "Lee", "Ann Lee")
    assert body["emailAddresses"][0]["id"] == contact["emailAddresses"][0]["id"]  # unchanged entry keeps its id
    assert len(body["emailAddresses"]) == 2
    assert spruce.get(f"/contacts/{contact['id']}").json() == body
    gone = spruce.patch("/contacts/entity_0000000000", json={"givenName": "X"}, headers=key())
    assert (gone.status_code, gone.json()["type"]) == (404, "not_found")
    assert spruce.get("/contacts/entity_0000000000").status_code == 404


def test_spruce_search_matches_structured_filters_and_free_text_sorted_by_id(spruce):
    ann = create_contact(spruce, givenName="Ann", emailAddresses=[{"value": "Ann@Example.com"}],
                         phoneNumbers=[{"value": "206-555-1234"}])
    bob = create_contact(spruce, givenName="Bob", emailAddresses=[{"value": "bob@example.com"},
                                                                   {"value": "ann@example.com"}])
    create_contact(spruce, givenName="Cy", emailAddresses=[{"value": "cy@example.com"}])

    def search(body):
        response = spruce.post("/contacts/search", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    result = search({"structured": {"emailAddressFilter": [{"match": "any", "values": ["ANN@example.com"]}]}})
    assert [c["id"] for c in result["contacts"]] == sorted([ann["id"], bob["id"]])
    assert (result["totalCount"], result["totalCountRelation"], result["hasMore"]) == (2, "eq", False)
    assert "paginationToken" not in result
    both = {"match": "all", "values": ["bob@example.com", "ann@example.com"]}
    assert [c["id"] for c in search({"structured": {"emailAddressFilter": [both]}})["contacts"]] == [bob["id"]]
    none = {"match": "none", "values": ["ann@example.com"]}
    assert [c["givenName"] for c in search({"structured": {"emailAddressFilter": [none]}})["contacts"]] == ["Cy"]
    by_phone = {"phoneNumberFilter": [{"match": "any", "values": ["+12065551234"]}]}
    assert [c["id"] for c in search({"structured": by_phone})["contacts"]] == [ann["id"]]
    assert [c["givenName"] for c in search({"freeText": "bo"})["contacts"]] == ["Bob"]
    assert search({"freeText": "nobody", "structured": by_phone})["contacts"] == []
    tags = {"structured": {"tagFilter": [{"match": "any", "tags": ["x"]}]}}
    assert spruce.post("/contacts/search", json=tags).status_code == 400  # not silently ignored
    bad_match = spruce.post("/contacts/search", json={"structured": {"emailAddressFilter": [{"values": ["a@b.c"]}]}})
    assert bad_match.status_code == 400


def test_spruce_pages_with_an_opaque_token_until_has_more_is_false(spruce):
    ids = [create_contact(spruce, givenName=f"N{n}", emailAddresses=[{"value": "same@example.com"}])["id"]
           for n in range(5)]
    by_email = {"structured": {"emailAddressFilter": [{"match": "any", "values": ["same@example.com"]}]}}
    for method, path, body in (("GET", "/contacts", None), ("POST", "/contacts/search", by_email)):
        seen, token, pages = [], None, 0
        while pages < 10:
            params = {"pageSize": 2} | ({"paginationToken": token} if token else {})
            page = spruce.request(method, path, params=params, json=body).json()
            pages += 1
            seen += [c["id"] for c in page["contacts"]]
            assert page["totalCount"] == 5
            assert ("paginationToken" in page) == page["hasMore"]
            if not page["hasMore"]:
                break
            token = page["paginationToken"]
        assert (seen, pages) == (ids, 3)
    for params in ({"pageSize": 0}, {"pageSize": 501}, {"pageSize": "ten"}, {"paginationToken": "garbage!"}):
        response = spruce.get("/contacts", params=params)
        assert (response.status_code, response.json()["type"]) == (400, "BAD_PARAMETER")


# --- Spruce: idempotency ------------------------------------------------------------------------


def test_spruce_duplicate_idempotency_key_is_422_per_path_and_not_replayed(spruce, box):
    headers = {"s-idempotency-key": "same-key"}
    body = {"givenName": "Ann", "emailAddresses": [{"value": "ann@example.com"}]}
    assert spruce.post("/contacts", json={}, headers=headers).status_code == 400  # does not burn the key
    box.configure(faults=[{"vendor": "spruce", "status": 500, "times": 1, "path_prefix": "/contacts"}])
    assert spruce.post("/contacts", json=body, headers=headers).status_code == 500  # nor does a 5xx
    created = spruce.post("/contacts", json=body, headers=headers)
    assert created.status_code == 201
    duplicate = spruce.post("/contacts", json=body, headers=headers)
    assert duplicate.status_code == 422
    assert duplicate.json() == {"statusCode": 422, "type": "duplicate_request", "message": "duplicate request"}
    assert len(box.snapshot()["spruce"]["contacts"]) == 1
    # The same key on another path is not a duplicate.
    conversation = spruce.post("/conversations", headers=headers,
                               json={"type": "note", "note": {"associatedContactIds": [created.json()["id"]]}})
    assert conversation.status_code == 201
    patch_path = f"/contacts/{created.json()['id']}"
    assert spruce.patch(patch_path, json={"familyName": "Lee"}, headers=headers).status_code == 200
    assert spruce.patch(patch_path, json={"familyName": "Lee"}, headers=headers).status_code == 422
    # SearchContacts does not take the key.
    searches = [spruce.post("/contacts/search", json={}, headers=headers).status_code for _ in range(2)]
    assert searches == [200, 200]
    too_long = spruce.post("/contacts", json=body, headers={"s-idempotency-key": "k" * 256})
    assert too_long.status_code == 400 and "255" in too_long.json()["message"]
    logged = [r["idempotency_key"] for r in box.snapshot()["requests"] if r["path"] == "/contacts"]
    assert logged[:4] == ["same-key"] * 4


def test_spruce_concurrent_duplicates_create_one_contact(spruce, box):
    body = {"givenName": "Ann", "emailAddresses": [{"value": "ann@example.com"}]}
    start = threading.Barrier(8)

    def attempt(_):
        start.wait(timeout=TIMEOUT)
        return spruce.post("/contacts", json=body, headers={"s-idempotency-key": "race"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [201] + [422] * 7
    assert len(box.snapshot()["spruce"]["contacts"]) == 1


def test_spruce_idempotency_keys_expire_after_the_ttl(spruce, box):
    box.configure(idempotency_ttl_s=0.2)
    headers = {"s-idempotency-key": "short-lived"}
    assert spruce.post("/contacts", json={"givenName": "A"}, headers=headers).status_code == 201
    assert spruce.post("/contacts", json={"givenName": "A"}, headers=headers).status_code == 422
    time.sleep(0.25)
    assert spruce.post("/contacts", json={"givenName": "A"}, headers=headers).status_code == 201


# --- Spruce: note conversations and messages ----------------------------------------------------


def test_spruce_note_conversation_is_created_wrapped_and_listed_for_its_contact(spruce):
    contact = create_contact(spruce)
    other = create_contact(spruce, givenName="Bob")
    created = create_note(spruce, contact["id"], title="SparkLoop referrals", memberIds=["entity_staff1"])
    conversation = created["conversation"]
    assert "postMessageRequestId" not in created
    assert re.fullmatch(r"t_[0-9A-Z]+", conversation["id"])
    assert {k: conversation[k] for k in ("object", "type", "title", "archived", "isReadOnly",
                                         "associatedContactIds", "internalMemberIds")} == {
        "object": "conversation", "type": "note", "title": "SparkLoop referrals", "archived": False,
        "isReadOnly": False, "associatedContactIds": [contact["id"]], "internalMemberIds": ["entity_staff1"]}
    assert conversation["createdAt"].endswith("Z")
    assert create_note(spruce, other["id"])["conversation"]["title"] == "Note"
    assert spruce.get(f"/conversations/{conversation['id']}").json() == {"conversation": conversation}
    listed = spruce.get(f"/contacts/{contact['id']}/conversations").json()
    assert list(listed) == ["conversations"] and [c["id"] for c in listed["conversations"]] == [conversation["id"]]
    assert spruce.get("/contacts/entity_0000000000/conversations").status_code == 404
    assert spruce.get("/conversations/t_0000000000").status_code == 404


def test_spruce_deleting_a_contact_deletes_its_conversations_and_answers_404_after(spruce, box):
    contact, other = create_contact(spruce), create_contact(spruce, givenName="Bob")
    mine = create_note(spruce, contact["id"])["conversation"]["id"]
    theirs = create_note(spruce, other["id"])["conversation"]["id"]
    assert post_note(spruce, mine, "before").status_code == 200

    deleted = spruce.delete(f"/contacts/{contact['id']}")

    assert (deleted.status_code, deleted.content) == (200, b"")  # DeleteContact: 200, no body
    assert deleted.headers["s-request-id"]
    gone = spruce.get(f"/contacts/{contact['id']}")
    assert gone.status_code == 404
    assert gone.json() == {"statusCode": 404, "type": "not_found", "message": "contact not found"}
    assert spruce.get(f"/contacts/{contact['id']}/conversations").status_code == 404
    assert post_note(spruce, mine, "after").json()["message"] == "conversation not found"
    assert spruce.delete(f"/contacts/{contact['id']}").status_code == 404
    spruce_state = box.snapshot()["spruce"]
    assert [c["id"] for c in spruce_state["conversations"]] == [theirs]
    assert list(spruce_state["items"]) == [theirs]


def test_sandbox_control_deletes_a_conversation_as_staff_would_in_the_app(spruce, control):
    contact = create_contact(spruce)
    conversation = create_note(spruce, contact["id"])["conversation"]["id"]

    assert control.delete(f"/spruce/conversations/{conversation}").json() == {"deleted": conversation}

    assert spruce.get(f"/conversations/{conversation}").status_code == 404
    assert post_note(spruce, conversation, "after").status_code == 404
    assert spruce.get(f"/contacts/{contact['id']}/conversations").json() == {"conversations": []}
    assert spruce.get(f"/contacts/{contact['id']}").status_code == 200  # the contact stays
    again = control.delete(f"/spruce/conversations/{conversation}")
    assert (again.status_code, again.json()) == (404, {"error": "conversation not found"})


def test_sandbox_control_merges_a_contact_into_another_with_its_emails_and_conversations(spruce, control):
    duplicate = create_contact(spruce)
    kept = create_contact(spruce, givenName="Ann", emailAddresses=[{"value": "ann@work.example"}])
    conversation = create_note(spruce, duplicate["id"])["conversation"]["id"]

    merged = control.post(f"/spruce/contacts/{duplicate['id']}/merge", json={"into": kept["id"]})

    assert merged.status_code == 200, merged.text
    assert [e["value"] for e in merged.json()["contact"]["emailAddresses"]] == [
        "ann@work.example", "ann@example.com"]
    assert spruce.get(f"/contacts/{duplicate['id']}").status_code == 404
    found = spruce.post("/contacts/search", json={"structured": {"emailAddressFilter": [
        {"match": "any", "values": ["ann@example.com"]}]}}).json()["contacts"]
    assert [c["id"] for c in found] == [kept["id"]]
    assert spruce.get(f"/conversations/{conversation}").json()["conversation"]["associatedContactIds"] == [
        kept["id"]]
    assert [c["id"] for c in spruce.get(f"/contacts/{kept['id']}/conversations").json()["conversations"]] == [
        conversation]
    for body, status in [({"into": kept["id"]}, 404), ({}, 400), ({"into": duplicate["id"]}, 404)]:
        assert control.post(f"/spruce/contacts/{duplicate['id']}/merge", json=body).status_code == status
    assert control.post(f"/spruce/contacts/{kept['id']}/merge", json={"into": kept["id"]}).status_code == 400


@pytest.mark.parametrize("body, message", [
    ({"type": "secure", "secure": {}}, "not supported by the sandbox"),
    ({"type": "email"}, "type"),
    ({"type": "note", "note": {"associatedContactIds": ["entity_0000000000"]}}, "unknown contact"),
    ({"type": "note", "note": {"message": {"body": [{"type": "text", "value": "x"}]}}}, "internal: true"),
])
def test_spruce_create_conversation_validation(spruce, body, message):
    response = spruce.post("/conversations", json=body, headers=key())
    assert response.status_code == 400 and message in response.json()["message"]


def test_spruce_internal_notes_become_items_listed_in_either_order(spruce, box):
    contact = create_contact(spruce)
    conversation_id = create_note(spruce, contact["id"])["conversation"]["id"]
    url = f"/conversations/{conversation_id}/messages"
    public = spruce.post(url, headers=key(), json={"body": [{"type": "text", "value": "hi"}], "internal": False})
    assert public.status_code == 400 and "internal: true" in public.json()["message"]
    assert spruce.post(url, headers=key(), json={"body": [], "internal": True}).status_code == 400
    assert spruce.post(url, headers=key(), json={"internal": True}).status_code == 400
    assert post_note(spruce, "t_0000000000", "lost").status_code == 404

    posted = [post_note(spruce, conversation_id, f"note {n}") for n in range(3)]
    assert [p.status_code for p in posted] == [200] * 3
    request_ids = [p.json()["requestId"] for p in posted]
    assert all(r.startswith("asyncRequest_") for r in request_ids) and list(posted[0].json()) == ["requestId"]

    newest = spruce.get(f"/conversations/{conversation_id}/items", params={"pageSize": 2}).json()
    assert [i["requestId"] for i in newest["conversationItems"]] == request_ids[:0:-1]
    assert (newest["hasMore"], newest["totalCount"]) == (True, 3)
    rest = spruce.get(f"/conversations/{conversation_id}/items",
                      params={"pageSize": 2, "paginationToken": newest["paginationToken"]}).json()
    assert [i["requestId"] for i in rest["conversationItems"]] == request_ids[:1] and not rest["hasMore"]
    oldest = spruce.get(f"/conversations/{conversation_id}/items", params={"order": "oldest_first"}).json()
    item = oldest["conversationItems"][0]
    assert item["id"].startswith("ti_") and item["conversationId"] == conversation_id
    assert (item["text"], item["isInternalNote"], item["direction"], item["requestId"]) == (
        "note 0", True, "none", request_ids[0])
    assert item["author"]["displayName"] and item["createdAt"] and item["modifiedAt"]
    for params in ({"order": "sideways"}, {"pageSize": 201}):
        assert spruce.get(f"/conversations/{conversation_id}/items", params=params).status_code == 400
    assert len(box.snapshot()["spruce"]["items"][conversation_id]) == 3


def test_spruce_a_message_given_at_creation_becomes_the_first_item(spruce):
    contact = create_contact(spruce)
    created = create_note(spruce, contact["id"], message={"body": [{"type": "text", "value": "hello "},
                                                                   {"type": "page", "value": "entity_staff1"},
                                                                   {"type": "text", "value": "world"}],
                                                          "internal": True})
    items = spruce.get(f"/conversations/{created['conversation']['id']}/items").json()["conversationItems"]
    assert [(i["requestId"], i["text"]) for i in items] == [(created["postMessageRequestId"], "hello world")]


def test_visibility_delays_imitate_eventual_consistency(spruce, sprig, box):
    box.configure(visibility_delay_ms={"spruce_items": 300, "spruce_search": 300, "sprig_users": 300})
    contact = create_contact(spruce)
    conversation_id = create_note(spruce, contact["id"])["conversation"]["id"]
    post_note(spruce, conversation_id, "later")
    sprig.post("/v2/users", json={"userId": "u1"})
    search = {"structured": {"emailAddressFilter": [{"match": "any", "values": ["ann@example.com"]}]}}
    items_url = f"/conversations/{conversation_id}/items"
    assert spruce.get(items_url).json()["conversationItems"] == []
    assert spruce.post("/contacts/search", json=search).json()["contacts"] == []
    assert sprig.get("/v2/users/u1").status_code == 404
    assert spruce.get(f"/contacts/{contact['id']}").status_code == 200  # reads by id are immediate
    assert wait_until(lambda: len(spruce.get(items_url).json()["conversationItems"]) == 1)
    assert len(spruce.post("/contacts/search", json=search).json()["contacts"]) == 1
    assert wait_until(lambda: sprig.get("/v2/users/u1").status_code == 200)  # posted a moment later


# --- SparkLoop API v2 ----------------------------------------------------------------------------


def seed_sparkloop(box, count: int) -> list[dict]:
    """`count` subscribers, one a day apart, the first oldest."""
    return box.add_sparkloop_subscribers([
        {"email": f"sub{n}@example.com", "created_at": f"2024-05-{n + 1:02d}T08:00:00Z"} for n in range(count)
    ])


@pytest.mark.parametrize("headers, message", [
    ({}, "API key is missing!"),
    ({"X-Api-Key": "wrong"}, "User not found!"),
    ({"Authorization": "Bearer sandbox-sparkloop-key"}, "API key is missing!"),
])
def test_sparkloop_rejects_a_missing_or_wrong_api_key_with_401(box, headers, message):
    for path in ("/subscribers", "/subscribers/sub0@example.com"):
        response = httpx.get(f"{box.sparkloop_url}{path}", headers=headers, timeout=TIMEOUT)
        assert (response.status_code, response.json()) == (401, {"error": message})


def test_sparkloop_lists_subscribers_newest_first_in_pages_with_meta(sparkloop, box):
    seeded = seed_sparkloop(box, 5)

    pages = [sparkloop.get("/subscribers", params={"page": n, "per_page": 2}).json() for n in (1, 2, 3, 4)]

    assert [[s["uuid"] for s in page["subscribers"]] for page in pages] == [
        [seeded[4]["uuid"], seeded[3]["uuid"]], [seeded[2]["uuid"], seeded[1]["uuid"]], [seeded[0]["uuid"]], []]
    assert pages[1]["meta"] == {"per_page": 2, "page": 2, "total_pages": 3, "total_subscribers": 5}
    first = pages[0]["subscribers"][0]
    assert list(first) == ["uuid", "email", "name", "ref_code", "referrer_code", "referred", "referral_status",
                           "ip_address", "user_agent", "origin", "utm_source", "utm_campaign", "created_at"]
    assert first["created_at"] == "2024-05-05T08:00:00.000Z" and re.fullmatch(r"sub_[0-9a-f]{10}", first["uuid"])
    default = sparkloop.get("/subscribers").json()
    assert default["meta"] == {"per_page": 50, "page": 1, "total_pages": 1, "total_subscribers": 5}


def test_sparkloop_equal_creation_times_list_the_latest_added_first(sparkloop, box):
    same = box.add_sparkloop_subscribers([{"email": f"t{n}@example.com", "created_at": "2024-05-01T08:00:00Z"}
                                          for n in range(3)])
    listed = sparkloop.get("/subscribers").json()["subscribers"]
    assert [s["uuid"] for s in listed] == [s["uuid"] for s in reversed(same)]


@pytest.mark.parametrize("params, name", [
    ({"per_page": 201}, "per_page"), ({"per_page": 0}, "per_page"), ({"per_page": "ten"}, "per_page"),
    ({"page": 0}, "page"), ({"page": "-1"}, "page"), ({"type": "everyone"}, "type"),
])
def test_sparkloop_bad_paging_is_400_with_an_error(sparkloop, params, name):
    response = sparkloop.get("/subscribers", params=params)
    assert response.status_code == 400
    assert response.json()["error"].startswith(name)


def test_sparkloop_filters_referrals_and_advocates(sparkloop, box):
    advocate, referred, _alone = box.add_sparkloop_subscribers([
        {"email": "a@example.com", "ref_code": "adv00001"},
        {"email": "b@example.com", "referrer_code": "adv00001", "referral_status": "pending"},
        {"email": "c@example.com"},
    ])
    assert referred["referred"] is True and advocate["referred"] is False

    def uuids(kind):
        return [s["uuid"] for s in sparkloop.get("/subscribers", params={"type": kind}).json()["subscribers"]]

    assert uuids("referrals") == [referred["uuid"]]
    assert uuids("advocates") == [advocate["uuid"]]
    assert len(uuids("all")) == 3


def test_sparkloop_reads_one_subscriber_by_uuid_or_email(sparkloop, box):
    [subscriber] = box.add_sparkloop_subscribers([{"email": "Ann@Example.com", "uuid": "sub_0123456789"}])
    assert sparkloop.get("/subscribers/sub_0123456789").json() == {"subscriber": subscriber}
    assert sparkloop.get("/subscribers/ann%40example.com").json() == {"subscriber": subscriber}
    missing = sparkloop.get("/subscribers/sub_nobody")
    assert (missing.status_code, missing.json()) == (404, {"error": "Subscriber not found!"})


def test_sparkloop_rate_limit_is_429_without_headers(sparkloop, box):
    box.configure(rate_limit={"sparkloop": {"limit": 2, "window_s": 60}})
    assert [sparkloop.get("/subscribers").status_code for _ in range(2)] == [200, 200]
    throttled = sparkloop.get("/subscribers")
    assert (throttled.status_code, throttled.json()) == (429, {"error": "rate limit exceeded"})
    # SparkLoop documents no Retry-After or rate-limit headers (https://docs.sparkloop.app).
    assert not {"retry-after", "ratelimit-reset", "x-ratelimit-remaining"} & set(throttled.headers)
    assert box.stats()["sparkloop"] == {"200": 2, "429": 1}


def test_sparkloop_faults_are_injected_in_its_error_format(sparkloop, box):
    box.configure(faults=[{"vendor": "sparkloop", "status": 500, "times": 1, "path_prefix": "/subscribers"}])
    failed = sparkloop.get("/subscribers")
    assert (failed.status_code, failed.json()) == (500, {"error": "injected fault"})
    assert sparkloop.get("/subscribers").status_code == 200


def test_sparkloop_subscribers_are_seeded_through_the_control_api(control, box):
    added = control.post("/sparkloop/subscribers", json=[{"email": "a@example.com", "name": "Ann",
                                                         "created_at": "2024-05-01T10:00:00+02:00"}])
    assert added.status_code == 201
    [subscriber] = added.json()["subscribers"]
    assert subscriber["created_at"] == "2024-05-01T08:00:00.000Z" and subscriber["referral_status"] == "verified"
    wrapped = control.post("/sparkloop/subscribers", json={"subscribers": [{"email": "b@example.com"}]})
    assert wrapped.status_code == 201

    state = control.get("/state").json()["sparkloop"]["subscribers"]
    assert [s["email"] for s in state] == ["b@example.com", "a@example.com"]  # newest first
    assert control.post("/reset").status_code == 200
    assert control.get("/state").json()["sparkloop"] == {"subscribers": []}


@pytest.mark.parametrize("items, message", [
    ({"email": "a@example.com"}, "must be a list"),
    ([{"email": "ok@example.com"}, {"name": "no email"}], "subscribers[1].email"),
    ([{"email": "a@example.com", "nickname": "x"}], "unknown fields nickname"),
    ([{"email": "a@example.com", "created_at": "last tuesday"}], "created_at"),
    ([{"email": "a@example.com", "referral_status": "confirmed"}], "referral_status"),
    ([{"email": "taken@example.com"}], "already taken"),
    ([{"email": "new@example.com", "uuid": "sub_taken"}], "already taken"),
])
def test_invalid_sparkloop_seeds_are_refused_whole(control, box, items, message):
    box.add_sparkloop_subscribers([{"email": "Taken@Example.com", "uuid": "sub_taken"}])
    response = control.post("/sparkloop/subscribers", json={"subscribers": items})
    assert response.status_code == 400 and message in response.json()["error"]
    assert [s["uuid"] for s in box.snapshot()["sparkloop"]["subscribers"]] == ["sub_taken"]
    with pytest.raises(ValueError, match=re.escape(message)):
        box.add_sparkloop_subscribers(items)


# --- rate limits --------------------------------------------------------------------------------


def test_spruce_rate_limit_headers_count_down_and_429_says_when_to_retry(spruce, box):
    box.configure(rate_limit={"spruce": {"limit": 3, "window_s": 60, "daily_limit": 10}})
    responses = [spruce.get("/contacts") for _ in range(3)]
    assert [r.headers["s-ratelimit-remaining"] for r in responses] == ["2", "1", "0"]
    assert {r.headers["s-ratelimit-limit"] for r in responses} == {"3"}
    assert [r.headers["s-ratelimit-daily-remaining"] for r in responses] == ["9", "8", "7"]
    throttled = spruce.post("/contacts", json={"givenName": "Ann"}, headers=key())
    assert throttled.status_code == 429
    assert throttled.json() == {"statusCode": 429, "type": "rate_limited", "message": "rate limit exceeded"}
    assert 55 <= int(throttled.headers["Retry-After"]) <= 60
    assert (throttled.headers["s-ratelimit-remaining"], throttled.headers["s-ratelimit-daily-remaining"]) == ("0", "7")
    assert "ratelimit-reset" not in throttled.headers
    assert box.snapshot()["spruce"]["contacts"] == []
    assert box.stats()["spruce"] == {"200": 3, "429": 1}
    without_daily = httpx.get(f"{box.url}/_sandbox/config", timeout=TIMEOUT).json()["rate_limit"]["spruce"]
    assert without_daily["daily_limit"] == 10


def test_spruce_daily_limit_throttles_until_the_next_day(spruce, box):
    box.configure(rate_limit={"spruce": {"limit": 100, "daily_limit": 1}})
    assert spruce.get("/contacts").status_code == 200
    throttled = spruce.get("/contacts")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 86_000


def test_spruce_sends_daily_headers_only_with_a_daily_limit(spruce, box):
    answer = spruce.get("/contacts")
    assert answer.headers["s-ratelimit-limit"] == "100"
    assert not [name for name in answer.headers if "daily" in name]


def test_spruce_daily_window_of_a_set_length_refuses_when_spent_then_turns_over(spruce, box):
    box.configure(rate_limit={"spruce": {"limit": 100, "daily_limit": 2, "day_s": 1.5}})
    spent = [spruce.get("/contacts") for _ in range(2)]
    assert [(r.headers["s-ratelimit-daily-limit"], r.headers["s-ratelimit-daily-remaining"]) for r in spent] == [
        ("2", "1"), ("2", "0")]
    refused = spruce.post("/contacts", json={"givenName": "Ann"}, headers=key())
    assert refused.status_code == 429 and refused.json()["type"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2  # until the day turns over
    assert (refused.headers["s-ratelimit-remaining"], refused.headers["s-ratelimit-daily-remaining"]) == ("98", "0")
    assert box.snapshot()["spruce"]["contacts"] == []
    assert wait_until(lambda: spruce.get("/contacts").status_code == 200, timeout_s=3)
    budget = box.snapshot()["budgets"]["spruce"]
    first_day, *_, today = budget["windows"]["day"]
    assert (first_day["relay"], first_day["lowest_remaining"]) == (2, 0) and first_day["relay_refused"] >= 1
    assert (today["relay"], today["remaining"], today["limit"]) == (1, 1, 2)
    assert budget["relay_refused"] == budget["relay_refused_by_day"] == box.stats()["spruce"]["429"]


def test_another_integration_spends_the_organizations_budget(spruce, control, box):
    limits = {"limit": 1000, "daily_limit": 5000, "day_s": 60, "other_integration_every_s": 0.1}
    assert control.post("/config", json={"rate_limit": {"spruce": limits}}).status_code == 200
    time.sleep(0.55)
    answer = spruce.get("/contacts")
    other = 5000 - 1 - int(answer.headers["s-ratelimit-daily-remaining"])
    assert other >= 5 and 1000 - 1 - int(answer.headers["s-ratelimit-remaining"]) == other
    budget = control.get("/state").json()["budgets"]["spruce"]
    assert budget["relay"] == 1 and budget["other"] >= other and budget["other_integration_every_s"] == 0.1
    assert box.stats()["spruce"] == {"200": 1} and len(box.snapshot()["requests"]) == 1  # not Relay's requests

    # Stopping it keeps the windows (new limits would start fresh ones).
    assert control.post("/config", json={"rate_limit": {"spruce": {"other_integration_every_s": None}}}).status_code == 200
    stopped = control.get("/state").json()["budgets"]["spruce"]["other"]
    time.sleep(0.25)
    later = spruce.get("/contacts")
    assert int(later.headers["s-ratelimit-daily-remaining"]) == 5000 - 2 - stopped


def test_rate_limit_windows_reset(sprig, box):
    box.configure(rate_limit={"sprig": {"limit": 1, "window_s": 0.3}})
    assert sprig.get("/v2/users/u1").status_code == 404
    assert sprig.get("/v2/users/u1").status_code == 429
    time.sleep(0.35)
    assert sprig.get("/v2/users/u1").status_code == 404


# --- faults and latency -------------------------------------------------------------------------


def test_faults_match_vendor_method_and_path_and_run_out(sprig, spruce, control):
    faults = [{"vendor": "spruce", "status": 500, "times": 2, "method": "POST", "path_prefix": "/contacts"},
              {"vendor": "sprig", "status": 400, "times": None, "method": "GET", "message": "bad day"}]
    assert control.post("/config", json={"faults": faults}).status_code == 200
    assert spruce.get("/contacts").status_code == 200  # other method
    failed = [spruce.post("/contacts", json={"givenName": "A"}, headers=key()) for _ in range(3)]
    assert [r.status_code for r in failed] == [500, 500, 201]
    assert failed[0].json() == {"statusCode": 500, "type": "internal_error", "message": "injected fault"}
    assert "s-request-id" in failed[0].headers
    for _ in range(3):
        assert sprig.get("/v2/users/u1").json() == {"error": "bad day"}  # until cleared
    assert sprig.post("/v2/users", json={"userId": "u1"}).status_code == 202
    assert control.get("/config").json()["faults"][0]["times"] is None
    assert control.post("/config", json={"faults": []}).status_code == 200
    assert sprig.get("/v2/users/u1").status_code == 200


def test_throttle_faults_carry_retry_after_and_bare_503s_do_not(sprig, spruce, box):
    box.configure(faults=[{"vendor": "sprig", "status": 429, "times": 1},
                          {"vendor": "spruce", "status": 503, "times": 1},
                          {"vendor": "spruce", "status": 503, "times": 1, "retry_after": 7}])
    throttled = sprig.get("/v2/users/u1")
    assert (throttled.status_code, throttled.content) == (429, b"")
    assert (throttled.headers["Retry-After"], throttled.headers["ratelimit-reset"]) == ("1", "1")
    outage = spruce.get("/contacts")
    assert outage.status_code == 503 and "Retry-After" not in outage.headers
    assert outage.json()["statusCode"] == 503
    assert spruce.get("/contacts").headers["Retry-After"] == "7"


def test_a_fault_after_processing_lands_the_request_so_the_retry_is_a_duplicate(spruce, box):
    box.configure(faults=[{"vendor": "spruce", "status": 502, "when": "after", "path_prefix": "/contacts"}])
    headers = {"s-idempotency-key": "lost-response"}
    body = {"givenName": "Ann"}
    assert spruce.post("/contacts", json=body, headers=headers).status_code == 502
    assert len(box.snapshot()["spruce"]["contacts"]) == 1
    assert spruce.post("/contacts", json=body, headers=headers).status_code == 422


def test_timeout_faults_outlast_the_client_timeout_before_or_after_processing(box):
    slow = {"vendor": "sprig", "status": "timeout", "delay_s": 0.4, "method": "POST", "path_prefix": "/v2/users"}
    box.configure(faults=[slow, slow | {"when": "after"}])
    upsert = {"userId": "u1", "events": [{"event": "signup", "timestamp": TS}]}
    with pytest.raises(httpx.ReadTimeout):  # not processed: answered 504, too late
        httpx.post(f"{box.sprig_url}/v2/users", json=upsert, headers=SPRIG_AUTH, timeout=0.2)
    assert wait_until(lambda: [r["status"] for r in box.snapshot()["requests"]] == [504])
    assert box.snapshot()["sprig"]["users"] == {}
    with pytest.raises(httpx.ReadTimeout):  # processed, answered too late: the retry counts twice
        httpx.post(f"{box.sprig_url}/v2/users", json=upsert, headers=SPRIG_AUTH, timeout=0.2)
    assert httpx.post(f"{box.sprig_url}/v2/users", json=upsert, headers=SPRIG_AUTH, timeout=TIMEOUT).status_code == 202
    assert box.snapshot()["sprig"]["users"]["u1"]["events"][0]["count"] == 2
    assert wait_until(lambda: len(box.snapshot()["requests"]) == 3)


def test_latency_delays_only_the_chosen_vendor(sprig, spruce, box):
    box.configure(latency_ms={"sprig": 250})
    started = time.monotonic()
    spruce.get("/contacts")
    assert time.monotonic() - started < 0.25
    started = time.monotonic()
    sprig.get("/v2/users/u1")
    assert time.monotonic() - started >= 0.25


# --- control API and lifecycle ------------------------------------------------------------------


def test_control_state_stats_and_reset(sprig, spruce, control, box):
    sprig.post("/v2/users", json={"userId": "u1", "emailAddress": "u1@example.com",
                                  "events": [{"event": "signup", "timestamp": TS}]})
    contact = create_contact(spruce)
    conversation_id = create_note(spruce, contact["id"])["conversation"]["id"]
    post_note(spruce, conversation_id, "hello")
    spruce.post("/contacts", json={"givenName": "A"}, headers={"s-idempotency-key": "kept"})
    control.post("/config", json={"latency_ms": {"spruce": 1}, "rate_limit": {"sprig": {"limit": 5}},
                                  "faults": [{"vendor": "sprig", "status": 500, "times": None}]})

    state = control.get("/state").json()
    assert state["sprig"]["users"]["u1"]["emailAddress"] == "u1@example.com"
    assert state["sprig"]["users"]["u1"]["events"][0]["count"] == 1
    assert state["spruce"]["contacts"][0]["id"] == contact["id"]
    assert [c["id"] for c in state["spruce"]["conversations"]] == [conversation_id]
    assert state["spruce"]["items"][conversation_id][0]["text"] == "hello"
    assert {"vendor": "sprig", "method": "POST", "path": "/v2/users", "status": 202,
            "idempotency_key": None}.items() <= state["requests"][0].items()
    assert control.get("/stats").json() == {"sprig": {"202": 1}, "spruce": {"200": 1, "201": 3}}

    assert state["budgets"]["spruce"]["relay"] == 4 and state["budgets"]["sprig"]["relay"] == 0  # limits set anew

    assert control.post("/reset").status_code == 200
    emptied = control.get("/state").json()
    budgets = emptied.pop("budgets")
    assert emptied == {"sprig": {"users": {}, "purges": []},
                       "spruce": {"contacts": [], "conversations": [], "items": {}},
                       "sparkloop": {"subscribers": []},
                       "requests": []}
    assert {vendor: (b["relay"], b["windows"]["minute"]) for vendor, b in budgets.items()} == {
        "sprig": (0, []), "spruce": (0, []), "sparkloop": (0, [])}
    assert control.get("/stats").json() == {}
    config = control.get("/config").json()
    assert (config["faults"], config["latency_ms"]["spruce"], config["rate_limit"]["sprig"]["limit"]) == ([], 0, 1000)
    # Keys are forgotten too.
    assert spruce.post("/contacts", json={"givenName": "A"}, headers={"s-idempotency-key": "kept"}).status_code == 201


@pytest.mark.parametrize("changes, message", [
    ({"bogus": 1}, "unknown settings"),
    ({"latency_ms": {"mailchimp": 5}}, "unknown keys"),
    ({"rate_limit": {"sparkloop": {"daily_limit": 5}}}, "unknown keys"),
    ({"rate_limit": {"sprig": {"daily_limit": 5}}}, "unknown keys"),
    ({"rate_limit": {"sprig": {"other_integration_every_s": 2}}}, "unknown keys"),
    ({"rate_limit": {"spruce": {"day_s": 0}}}, "day_s"),
    ({"rate_limit": {"spruce": {"other_integration_every_s": "2"}}}, "other_integration_every_s"),
    ({"rate_limit": {"spruce": {"limit": -1}}}, "limit"),
    ({"faults": [{"vendor": "spruce", "status": 200}]}, "status"),
    ({"faults": [{"vendor": "nobody", "status": 500}]}, "vendor"),
    ({"faults": [{"vendor": "spruce", "status": 500, "times": 0}]}, "times"),
])
def test_invalid_config_is_rejected_whole(control, box, changes, message):
    before = box.state.config()
    response = control.post("/config", json={"latency_ms": {"sprig": 7}, **changes})
    assert response.status_code == 400 and message in response.json()["error"]
    assert box.state.config() == before
    with pytest.raises(ValueError, match=message):
        box.configure(**changes)


def test_control_api_answers_loopback_clients_only():
    client = create_sandbox_app().test_client()
    assert client.get("/_sandbox/state", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    assert client.post("/_sandbox/reset", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    assert client.get("/_sandbox/state", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_serve_in_thread_stops_and_frees_its_port():
    running = serve_in_thread()
    assert running.url.startswith("http://127.0.0.1:")
    assert running.sprig_url == running.url + "/sprig" and running.spruce_url == running.url + "/spruce/v1"
    assert running.sparkloop_url == running.url + "/sparkloop/v2"
    assert httpx.get(f"{running.url}/_sandbox/stats", timeout=TIMEOUT).status_code == 200
    running.stop()
    assert not running.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.url}/_sandbox/stats", timeout=1)


def test_python_m_sandbox_serves_in_the_foreground():
    port = free_port()
    command = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "no banner within 10 s"
        banner = process.stdout.readline()  # printed once the socket is bound
        assert banner.strip() == f"Sandbox at http://127.0.0.1:{port}"
        response = httpx.post(f"http://127.0.0.1:{port}/sprig/v2/users", json={"userId": "u1"},
                              headers=SPRIG_AUTH, timeout=TIMEOUT)
        assert response.status_code == 202
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)
