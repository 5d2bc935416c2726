"""Vendor clients: classification and wire details over httpx.MockTransport, then the real
HTTP round trip against the sandbox."""
from __future__ import annotations

import json
import logging
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from testbed.net import free_port
from workers.classify import Action, classify
from workers.sprig.client import SprigClient
from workers.spruce.client import SpruceClient
from workers.vendor_errors import VendorError, classify_status, retry_after_seconds
from workers.vendor_http import RateLimitHeaders

SPRIG_KEY = "sprig-secret-key-123"
SPRUCE_TOKEN = "spruce-secret-token-456"
EMAIL = "Jane.Doe+news@example.com"


def spruce_error(status, type_, message, **headers):
    return httpx.Response(status, json={"statusCode": status, "type": type_, "message": message},
                          headers={"s-request-id": "0E5QDGJC030000", **headers})


def mock(handler, seen=None):
    def record(request):
        if seen is not None:
            seen.append(request)
        return handler(request)
    return httpx.MockTransport(record)


def sprig(handler, seen=None, **kwargs):
    return SprigClient("https://sprig.test", SPRIG_KEY, transport=mock(handler, seen), **kwargs)


def spruce(handler, seen=None, **kwargs):
    return SpruceClient("https://spruce.test/v1", SPRUCE_TOKEN, transport=mock(handler, seen), **kwargs)


def action(err: VendorError) -> Action:
    """What the delivery engine's one classifier makes of the error."""
    return classify(err).action


def assert_no_secrets(text):
    for secret in (EMAIL, EMAIL.lower(), SPRIG_KEY, SPRUCE_TOKEN, "API-Key", "Bearer"):
        assert secret not in text


# --- classify_status: the single decision table --------------------------------------------

@pytest.mark.parametrize("status, headers, kind", [
    (200, {}, None), (201, {}, None), (202, {}, None),
    (400, {}, "permanent"), (404, {}, "permanent"), (405, {}, "permanent"), (422, {}, "permanent"),
    (401, {}, "auth"), (403, {}, "auth"),
    (408, {}, "transient"), (425, {}, "transient"), (500, {}, "transient"), (502, {}, "transient"),
    (503, {}, "transient"), (504, {}, "transient"),
    (429, {}, "throttled"), (429, {"Retry-After": "5"}, "throttled"),
    (503, {"Retry-After": "5"}, "throttled"), (503, {"ratelimit-reset": "5"}, "throttled"),
    (301, {}, "permanent"),
])
def test_classify_status(status, headers, kind):
    assert classify_status(status, headers) == kind


def test_retry_after_prefers_retry_after_then_ratelimit_reset():
    assert retry_after_seconds({"Retry-After": "12", "ratelimit-reset": "30"}) == 12.0
    assert retry_after_seconds({"RateLimit-Reset": "30"}) == 30.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None
    in_a_minute = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    assert 50 <= retry_after_seconds({"Retry-After": in_a_minute}) <= 61
    assert retry_after_seconds({"Retry-After": "-3"}) == 0.0


@pytest.mark.parametrize("kind, expected, wait_s", [
    ("throttled", Action.DEFER, 3.0), ("auth", Action.DEFER, 60.0), ("transient", Action.RETRY, None),
    ("permanent", Action.FAIL, None), ("duplicate", Action.FAIL, None),
])
def test_the_classifier_decides_each_kind_of_vendor_error(kind, expected, wait_s):
    err = VendorError("spruce", kind, "slow down", status=429, method="POST", path="/contacts",
                      retry_after=3.0, request_id="R1")
    verdict = classify(err)
    assert (verdict.action, verdict.wait_s, verdict.reason) == (expected, wait_s, str(err))
    assert str(err) == "spruce POST /contacts -> 429: slow down [req R1]"
    with pytest.raises(ValueError):
        VendorError("sprig", "fatal", "not a kind")


# --- Sprig over MockTransport ----------------------------------------------------------------

def test_sprig_upsert_sends_documented_headers_and_accepts_202():
    seen = []
    with sprig(lambda r: httpx.Response(202, text=""), seen) as client:
        assert client.upsert_user({"userId": "u1", "emailAddress": EMAIL}) is None
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/v2/users")
    assert request.headers["Authorization"] == f"API-Key {SPRIG_KEY}"
    assert request.headers["User-Agent"].startswith("relay/")
    assert json.loads(request.content) == {"userId": "u1", "emailAddress": EMAIL}


def test_sprig_get_user_url_encodes_the_id_and_maps_404_to_none():
    seen = []
    user = {"id": "a926", "attributes": {"plan": "pro"}, "events": []}
    responses = iter([httpx.Response(200, json=user), httpx.Response(404)])
    client = sprig(lambda r: next(responses), seen)
    assert client.get_user(EMAIL) == user
    assert client.get_user("missing") is None
    assert seen[0].url.raw_path == b"/v2/users/Jane.Doe%2Bnews%40example.com"


def test_sprig_bad_key_is_auth_with_a_fixed_message():
    client = sprig(lambda r: httpx.Response(403))
    with pytest.raises(VendorError) as info:
        client.get_user(EMAIL)
    err = info.value
    assert (err.vendor, err.kind, err.status, action(err)) == ("sprig", "auth", 403, Action.DEFER)
    assert err.message == "Sprig rejected the API key (403)"
    assert str(err) == "sprig GET /v2/users/{userId} -> 403: Sprig rejected the API key (403)"


def test_sprig_400_carries_the_error_message_without_echoed_emails():
    client = sprig(lambda r: httpx.Response(400, json={"error": f"invalid emailAddress {EMAIL}, did you mean a@b.co"}))
    with pytest.raises(VendorError) as info:
        client.upsert_user({"userId": "u1", "emailAddress": EMAIL})
    assert info.value.kind == "permanent"
    # What was sent is known and removed; any other email by its shape.
    assert str(info.value) == "sprig POST /v2/users -> 400: invalid emailAddress <redacted>, did you mean <email>"


def test_sprig_429_is_throttled_with_ratelimit_reset_recorded():
    client = sprig(lambda r: httpx.Response(429, headers={"ratelimit-reset": "7"}))
    with pytest.raises(VendorError) as info:
        client.upsert_user({"userId": "u1"})
    assert (info.value.kind, info.value.retry_after, action(info.value)) == ("throttled", 7.0, Action.DEFER)
    assert client.last_rate_limit == RateLimitHeaders(reset_after=7.0)


@pytest.mark.parametrize("body", [b"", b"<html>Bad Gateway</html>", b"{not json"])
def test_unparseable_error_bodies_fall_back_to_the_reason_phrase(body):
    client = sprig(lambda r: httpx.Response(502, content=body))
    with pytest.raises(VendorError) as info:
        client.upsert_user({"userId": "u1"})
    assert (info.value.kind, info.value.status, info.value.message) == ("transient", 502, "Bad Gateway")


@pytest.mark.parametrize("exc, message", [
    (httpx.ReadTimeout("timed out"), "timeout after 2.5s"),
    (httpx.ConnectTimeout("timed out"), "connect timeout after 2.5s"),
    (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused"),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."),
     "server closed the connection"),
])
def test_network_failures_are_transient_without_status(exc, message):
    def fail(request):
        raise exc
    client = sprig(fail, timeout=2.5)
    with pytest.raises(VendorError) as info:
        client.get_user(EMAIL)
    err = info.value
    assert (err.kind, err.status, err.message) == ("transient", None, message)
    assert str(err) == f"sprig GET /v2/users/{{userId}} -> network error: {message}"


def test_real_connection_refused_is_transient():
    with SpruceClient(f"http://127.0.0.1:{free_port()}/v1", SPRUCE_TOKEN, timeout=2) as client:
        with pytest.raises(VendorError) as info:
            client.search_contacts_by_email(EMAIL)
    assert (info.value.kind, info.value.status, info.value.message) == ("transient", None, "connection refused")
    assert_no_secrets(str(info.value))


def test_timeouts_are_split_connect_and_read():
    client = SprigClient("https://sprig.test", SPRIG_KEY, timeout=30)
    timeout = client._http._client.timeout
    assert (timeout.connect, timeout.read) == (5.0, 30)
    client.close()


# --- Spruce over MockTransport ---------------------------------------------------------------

def test_spruce_error_line_has_type_message_and_request_id():
    client = spruce(lambda r: spruce_error(400, "BAD_PARAMETER", "Invalid Contact ID"))
    with pytest.raises(VendorError) as info:
        client.create_contact({"givenName": "Jane"}, idempotency_key="relay-contact-1")
    err = info.value
    assert str(err) == "spruce POST /contacts -> 400 BAD_PARAMETER: Invalid Contact ID [req 0E5QDGJC030000]"
    assert (err.kind, err.request_id, err.message) == ("permanent", "0E5QDGJC030000", "Invalid Contact ID")


@pytest.mark.parametrize("type_, message, kind", [
    ("duplicate_request", "duplicate request", "duplicate"),
    ("invalid_input", "Request with this idempotency key already processed", "duplicate"),
    ("DUPLICATE", "", "duplicate"),
    ("invalid_input", "givenName is too long", "permanent"),
])
def test_spruce_422_is_duplicate_only_when_the_body_says_so(type_, message, kind):
    client = spruce(lambda r: spruce_error(422, type_, message))
    with pytest.raises(VendorError) as info:
        client.post_message("t_1", {"body": [], "internal": True}, idempotency_key="relay-note-1")
    assert info.value.kind == kind
    assert action(info.value) == Action.FAIL


def test_spruce_401_and_403_are_auth():
    for status in (401, 403):
        client = spruce(lambda r, s=status: httpx.Response(s))
        with pytest.raises(VendorError) as info:
            client.get_contact("entity_1")
        assert (info.value.kind, info.value.status) == ("auth", status)
        assert "rejected" in info.value.message


def test_spruce_429_with_retry_after_is_throttled():
    client = spruce(lambda r: spruce_error(429, "rate_limited", "slow down", **{"Retry-After": "2"}))
    with pytest.raises(VendorError) as info:
        client.get_contact("entity_1")
    assert (info.value.kind, info.value.retry_after) == ("throttled", 2.0)


def test_spruce_error_strings_never_leak_email_or_token():
    echo = f"no contact for {EMAIL} with token {SPRUCE_TOKEN}"
    client = spruce(lambda r: spruce_error(500, "internal_error", echo))
    with pytest.raises(VendorError) as info:
        client.search_contacts_by_email(EMAIL)
    assert info.value.kind == "transient"
    assert_no_secrets(str(info.value))
    assert_no_secrets(repr(info.value))
    assert str(info.value).startswith("spruce POST /contacts/search -> 500 internal_error:")


def test_spruce_writes_carry_the_idempotency_key_and_unwrap_responses():
    seen = []
    def handler(request):
        if request.url.path == "/v1/contacts":
            return httpx.Response(201, json={"id": "entity_1", "object": "contact"})
        if request.url.path == "/v1/conversations":
            return httpx.Response(201, json={"conversation": {"id": "t_1", "type": "note"}})
        return httpx.Response(200, json={"requestId": "asyncRequest_1"})
    client = spruce(handler, seen)
    assert client.create_contact({"givenName": "Jane"}, idempotency_key="k-contact")["id"] == "entity_1"
    assert client.create_conversation({"type": "note"}, idempotency_key="k-conv") == {"id": "t_1", "type": "note"}
    assert client.post_message("t_1", {"body": [], "internal": True}, idempotency_key="k-note") == "asyncRequest_1"
    assert [r.headers["s-idempotency-key"] for r in seen] == ["k-contact", "k-conv", "k-note"]
    assert seen[2].url.path == "/v1/conversations/t_1/messages"
    assert all(r.headers["Authorization"] == f"Bearer {SPRUCE_TOKEN}" for r in seen)


def test_spruce_rejects_bad_idempotency_keys_before_sending():
    seen = []
    client = spruce(lambda r: httpx.Response(201, json={}), seen)
    for key in ("k" * 256, "", "line\nbreak"):
        with pytest.raises(ValueError):
            client.create_contact({"givenName": "Jane"}, idempotency_key=key)
    assert seen == []
    client.create_contact({"givenName": "Jane"}, idempotency_key="k" * 255)
    assert len(seen) == 1


def test_spruce_search_follows_pagination_without_an_idempotency_key():
    seen = []
    pages = {None: ({"id": "entity_1"}, "p2"), "p2": ({"id": "entity_2"}, "p3"), "p3": ({"id": "entity_3"}, None)}
    def handler(request):
        contact, token = pages[request.url.params.get("paginationToken")]
        return httpx.Response(200, json={"contacts": [contact], "hasMore": token is not None,
                                         **({"paginationToken": token} if token else {})})
    client = spruce(handler, seen)
    assert [c["id"] for c in client.search_contacts_by_email(EMAIL)] == ["entity_1", "entity_2", "entity_3"]
    assert len(seen) == 3
    assert all(r.url.path == "/v1/contacts/search" and r.url.params["pageSize"] for r in seen)
    assert "s-idempotency-key" not in seen[0].headers
    assert json.loads(seen[0].content) == {
        "structured": {"emailAddressFilter": [{"match": "any", "values": [EMAIL.lower()]}]}}


def test_spruce_pagination_is_bounded():
    seen = []
    client = spruce(lambda r: httpx.Response(200, json={"conversationItems": [{"id": f"ti_{len(seen)}"}],
                                                        "hasMore": True, "paginationToken": f"p{len(seen)}"}), seen)
    items = list(client.iter_conversation_items("t_1", page_size=10, max_pages=4))
    assert len(items) == 4 and len(seen) == 4
    assert seen[0].url.params["order"] == "newest_first" and seen[0].url.params["pageSize"] == "10"
    assert seen[1].url.params["paginationToken"] == "p1"
    with pytest.raises(ValueError):
        client.iter_conversation_items("t_1", order="random")


def test_spruce_records_rate_limit_headers_and_logs_only_templates(caplog):
    headers = {"s-ratelimit-limit": "100", "s-ratelimit-remaining": "94",
               "s-ratelimit-daily-limit": "5000", "s-ratelimit-daily-remaining": "4000", "s-request-id": "R9"}
    client = spruce(lambda r: httpx.Response(200, json={"conversations": [{"id": "t_1"}]}, headers=headers))
    assert client.last_rate_limit is None
    with caplog.at_level(logging.DEBUG, logger="relay.vendor.spruce"):
        assert client.list_contact_conversations("entity_1") == [{"id": "t_1"}]
        client.search_contacts_by_email(EMAIL)
    assert client.last_rate_limit == RateLimitHeaders(limit=100, remaining=94, daily_limit=5000, daily_remaining=4000)
    logged = [r for r in caplog.records if r.name == "relay.vendor.spruce"]
    assert logged and "GET /contacts/{contactId}/conversations -> 200 [req R9]" in logged[0].getMessage()
    assert_no_secrets(caplog.text)


def test_spruce_get_contact_404_is_none_and_non_json_success_is_transient():
    responses = iter([httpx.Response(404, json={"statusCode": 404, "type": "not_found", "message": "x"}),
                      httpx.Response(200, text="<html>proxy</html>")])
    client = spruce(lambda r: next(responses))
    assert client.get_contact("entity_gone") is None
    with pytest.raises(VendorError) as info:
        client.get_contact("entity_1")
    assert (info.value.kind, info.value.status) == ("transient", 200)


# --- over real HTTP against the sandbox ------------------------------------------------------

SANDBOX_SPRIG_KEY = "sandbox-sprig-key"
SANDBOX_SPRUCE_TOKEN = "sandbox-spruce-token"


@pytest.fixture
def live(sandbox):
    sandbox.reset()
    sprig_client = SprigClient(sandbox.sprig_url, SANDBOX_SPRIG_KEY, timeout=5)
    spruce_client = SpruceClient(sandbox.spruce_url, SANDBOX_SPRUCE_TOKEN, timeout=5)
    yield sprig_client, spruce_client
    sprig_client.close()
    spruce_client.close()
    sandbox.reset()


def new_contact(client, email=EMAIL, key="relay-contact-1"):
    return client.create_contact({"category": "patient", "givenName": "Jane",
                                  "emailAddresses": [{"value": email}]}, idempotency_key=key)


def test_live_wrong_credentials_are_auth(sandbox, live):
    with SprigClient(sandbox.sprig_url, "wrong-key") as sprig_client:
        with pytest.raises(VendorError) as sprig_info:
            sprig_client.upsert_user({"userId": "u1"})
    with SpruceClient(sandbox.spruce_url, "wrong-token") as spruce_client:
        with pytest.raises(VendorError) as spruce_info:
            spruce_client.search_contacts_by_email(EMAIL)
    assert (sprig_info.value.kind, sprig_info.value.status) == ("auth", 403)
    assert sprig_info.value.message == "Sprig rejected the API key (403)"
    assert (spruce_info.value.kind, spruce_info.value.status, action(spruce_info.value)) == ("auth", 403, Action.DEFER)
    assert spruce_info.value.request_id
    for err in (sprig_info.value, spruce_info.value):
        assert_no_secrets(str(err))
        assert "wrong-key" not in str(err) and "wrong-token" not in str(err)


def test_live_sprig_upsert_then_read_back(live):
    sprig_client, _ = live
    body = {"userId": EMAIL, "emailAddress": EMAIL, "attributes": {"plan": "pro", "referrals": "3"},
            "events": [{"event": "referral_made", "timestamp": 1_700_000_000_000}]}
    assert sprig_client.get_user(EMAIL) is None
    sprig_client.upsert_user(body)
    sprig_client.upsert_user(body)  # a retried upsert: attributes settle, events count again
    user = sprig_client.get_user(EMAIL)
    assert user["externalUserId"] == EMAIL
    assert user["attributes"] == {"plan": "pro", "referrals": "3"}
    assert [(e["event"], e["count"]) for e in user["events"]] == [("referral_made", 2)]


def test_live_sprig_validation_error_is_permanent(live):
    sprig_client, _ = live
    with pytest.raises(VendorError) as info:
        sprig_client.upsert_user({"userId": "u1", "events": [{"event": "x", "timestamp": 1_700_000_000}]})
    assert (info.value.kind, info.value.status) == ("permanent", 400)
    assert "milliseconds" in info.value.message


def test_live_spruce_create_contact_then_search_and_get(live):
    _, spruce_client = live
    assert spruce_client.search_contacts_by_email(EMAIL) == []
    contact = new_contact(spruce_client)
    assert contact["id"].startswith("entity_")
    found = spruce_client.search_contacts_by_email(EMAIL.upper())
    assert [c["id"] for c in found] == [contact["id"]]
    assert spruce_client.get_contact(contact["id"])["emailAddresses"][0]["value"] == EMAIL
    assert spruce_client.get_contact("entity_9999999999") is None


def test_live_spruce_search_follows_pages(live, monkeypatch):
    _, spruce_client = live
    monkeypatch.setattr("workers.spruce.client.SEARCH_PAGE_SIZE", 2)
    ids = [new_contact(spruce_client, key=f"relay-contact-{n}")["id"] for n in range(5)]
    new_contact(spruce_client, email="someone.else@example.com", key="relay-contact-other")
    assert [c["id"] for c in spruce_client.search_contacts_by_email(EMAIL)] == ids


def test_live_spruce_reused_idempotency_key_is_duplicate(sandbox, live):
    _, spruce_client = live
    new_contact(spruce_client, key="relay-contact-same")
    with pytest.raises(VendorError) as info:
        new_contact(spruce_client, key="relay-contact-same")
    err = info.value
    assert (err.kind, err.status, action(err)) == ("duplicate", 422, Action.FAIL)
    assert err.request_id and f"[req {err.request_id}]" in str(err)
    assert_no_secrets(str(err))
    assert len(sandbox.state.snapshot()["spruce"]["contacts"]) == 1


def test_live_spruce_note_conversation_and_internal_message(live):
    _, spruce_client = live
    contact = new_contact(spruce_client)
    conversation = spruce_client.create_conversation(
        {"type": "note", "note": {"title": "SparkLoop referrals", "associatedContactIds": [contact["id"]]}},
        idempotency_key=f"relay-noteconv-{contact['id']}")
    assert conversation["id"].startswith("t_") and conversation["type"] == "note"
    listed = spruce_client.list_contact_conversations(contact["id"])
    assert [c["id"] for c in listed] == [conversation["id"]]
    request_ids = [
        spruce_client.post_message(conversation["id"], {"body": [{"type": "text", "value": f"note {n}"}],
                                                        "internal": True}, idempotency_key=f"relay-note-{n}")
        for n in range(3)]
    assert all(r.startswith("asyncRequest_") for r in request_ids)
    items = list(spruce_client.iter_conversation_items(conversation["id"], page_size=2))
    assert [i["requestId"] for i in items] == request_ids[::-1]  # newest first, across two pages
    mine = next(i for i in items if i["requestId"] == request_ids[0])
    assert mine["isInternalNote"] is True and mine["text"] == "note 0"


def test_live_injected_500_is_transient_and_the_retry_succeeds(sandbox, live):
    _, spruce_client = live
    httpx.post(f"{sandbox.url}/_sandbox/config", timeout=5, json={"faults": [
        {"vendor": "spruce", "status": 500, "times": 1, "method": "POST", "path_prefix": "/contacts"}]}
    ).raise_for_status()
    with pytest.raises(VendorError) as info:
        new_contact(spruce_client, key="relay-contact-retry")
    assert (info.value.kind, info.value.status, action(info.value)) == ("transient", 500, Action.RETRY)
    assert info.value.message == "injected fault"
    assert new_contact(spruce_client, key="relay-contact-retry")["id"].startswith("entity_")


def test_live_slow_vendor_times_out_as_transient(sandbox):
    sandbox.reset()
    sandbox.configure(faults=[{"vendor": "sprig", "status": "timeout", "delay_s": 1.5, "times": 1}])
    with SprigClient(sandbox.sprig_url, SANDBOX_SPRIG_KEY, timeout=0.3) as client:
        with pytest.raises(VendorError) as info:
            client.get_user(EMAIL)
    assert (info.value.kind, info.value.status, info.value.message) == ("transient", None, "timeout after 0.3s")
    assert EMAIL not in str(info.value) and "%40" not in str(info.value)
    sandbox.reset()


def test_live_spruce_rate_limit_headers_are_recorded(sandbox, live):
    _, spruce_client = live
    sandbox.configure(rate_limit={"spruce": {"limit": 100, "daily_limit": 1000}})
    spruce_client.search_contacts_by_email(EMAIL)
    first = spruce_client.last_rate_limit
    spruce_client.search_contacts_by_email(EMAIL)
    assert (first.limit, first.remaining, first.daily_limit, first.daily_remaining) == (100, 99, 1000, 999)
    assert spruce_client.last_rate_limit.remaining == 98


def test_live_429_is_throttled_with_retry_after(sandbox, live):
    sprig_client, spruce_client = live
    sandbox.configure(rate_limit={"spruce": {"limit": 2, "window_s": 60},
                                  "sprig": {"limit": 1, "window_s": 300}})
    spruce_client.get_contact("entity_1")
    spruce_client.get_contact("entity_1")
    sprig_client.get_user("u1")
    for client, call, window in ((spruce_client, lambda: spruce_client.get_contact("entity_1"), 60),
                                 (sprig_client, lambda: sprig_client.get_user("u1"), 300)):
        with pytest.raises(VendorError) as info:
            call()
        err = info.value
        assert (err.kind, err.status, action(err)) == ("throttled", 429, Action.DEFER)
        assert 0 < err.retry_after <= window
        assert client.last_rate_limit.reset_after == err.retry_after
    assert spruce_client.last_rate_limit.remaining == 0
