"""Spruce's contacts and conversations API (paging and idempotency:
https://developer.sprucehealth.com/docs/overview; each operation under
https://developer.sprucehealth.com/reference/).

Every POST/PATCH that Spruce declares idempotent carries the caller's `s-idempotency-key`;
a reused key comes back as VendorError(kind=DUPLICATE) and the caller reads back."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx

from workers.guard import Guard
from workers.outcomes import ErrorKind
from workers.spruce.sends import search_by_email_body
from workers.spruce.settings import spruce_settings
from workers.vendor_http import RateLimitHeaders, VendorClient, VendorHTTP, shared_client

MAX_IDEMPOTENCY_KEY = 255
SEARCH_PAGE_SIZE = 100
MAX_PAGES = 20
ITEM_ORDERS = ("newest_first", "oldest_first")
_DUPLICATE = re.compile(r"duplicate|idempoten", re.IGNORECASE)

log = logging.getLogger("relay.vendor.spruce")


class SpruceClient(VendorClient):
    vendor = "spruce"

    def __init__(
        self,
        base_url: str,
        api_token: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        guard: Guard | None = None,
    ):
        self._http = VendorHTTP(
            self.vendor, base_url, f"Bearer {api_token}", timeout, transport, api_token, guard, hooks=self
        )

    # Spruce names each answer, and says its limits (per window and per day) in headers of its own.
    request_id_header = "s-request-id"

    def rate_limits(self, headers: httpx.Headers) -> RateLimitHeaders:
        return RateLimitHeaders.from_headers(headers, prefix="s-", daily=True)

    def error_kind(self, status: int, error_type: str | None, message: str | None, kind: ErrorKind) -> ErrorKind:
        """A reused idempotency key comes back as a 422 whose body says "duplicate"."""
        if status == 422 and _DUPLICATE.search(f"{error_type or ''} {message or ''}"):
            return ErrorKind.DUPLICATE
        return kind

    def search_contacts_by_email(self, email: str) -> list[dict]:
        """Every contact with this email (structured search, sorted by id ascending)."""
        # SearchContacts declares no idempotency header: it is read-only.
        return list(
            self._pages(
                "POST",
                "/contacts/search",
                "contacts",
                json=search_by_email_body(email),
                page_size=SEARCH_PAGE_SIZE,
                max_pages=MAX_PAGES,
            )
        )

    def create_contact(self, body: dict, idempotency_key: str) -> dict:
        """POST /contacts → the new contact (201, bare)."""
        return self._post("/contacts", body, idempotency_key)

    def get_contact(self, contact_id: str) -> dict | None:
        path = "/contacts/{contactId}"
        response = self._request("GET", path, path_params={"contactId": contact_id}, ok_statuses=(404,))
        return None if response.status_code == 404 else self._http.json("GET", path, response)

    def list_contact_conversations(self, contact_id: str) -> list[dict]:
        """GET /contacts/{id}/conversations; not paginated."""
        path = "/contacts/{contactId}/conversations"
        response = self._request("GET", path, path_params={"contactId": contact_id})
        return list(self._http.json("GET", path, response).get("conversations") or [])

    def create_conversation(self, body: dict, idempotency_key: str) -> dict:
        """POST /conversations → the conversation, unwrapped from `{"conversation": …}`."""
        return self._post("/conversations", body, idempotency_key)["conversation"]

    def post_message(self, conversation_id: str, body: dict, idempotency_key: str) -> str:
        """POST /conversations/{id}/messages → the `requestId`: accepted, posted asynchronously."""
        return self._post(
            "/conversations/{conversationId}/messages",
            body,
            idempotency_key,
            path_params={"conversationId": conversation_id},
        )["requestId"]

    def iter_conversation_items(
        self, conversation_id: str, order: str = "newest_first", page_size: int = 50, max_pages: int = MAX_PAGES
    ) -> Iterator[dict]:
        """The conversation's items across at most `max_pages` pages. Listing is eventually
        consistent, so a just-posted note may be missing for a moment."""
        if order not in ITEM_ORDERS:
            raise ValueError(f"order must be one of {ITEM_ORDERS}")
        if not 1 <= page_size <= 200:
            raise ValueError("page_size must be within 1-200")
        return self._pages(
            "GET",
            "/conversations/{conversationId}/items",
            "conversationItems",
            path_params={"conversationId": conversation_id},
            params={"order": order},
            page_size=page_size,
            max_pages=max_pages,
        )

    def _post(self, path: str, body: dict, idempotency_key: str, path_params: dict[str, str] | None = None) -> dict:
        _check_idempotency_key(idempotency_key)
        response = self._request(
            "POST", path, path_params=path_params, json=body, headers={"s-idempotency-key": idempotency_key}
        )
        return self._http.json("POST", path, response)

    def _pages(
        self,
        method: str,
        path: str,
        key: str,
        *,
        page_size: int,
        max_pages: int,
        path_params: dict[str, str] | None = None,
        params: dict | None = None,
        json: dict | None = None,
    ) -> Iterator[dict]:
        token = None
        for _ in range(max_pages):
            query = {**(params or {}), "pageSize": page_size}
            if token:
                query["paginationToken"] = token
            response = self._request(method, path, path_params=path_params, params=query, json=json)
            page = self._http.json(method, path, response)
            yield from page.get(key) or []
            next_token = page.get("paginationToken")
            if not page.get("hasMore") or not next_token or next_token == token:
                return
            token = next_token
        log.warning("%s %s: stopped after %d pages with more results left", method, path, max_pages)


def _check_idempotency_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("an idempotency key is required for Spruce writes")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"idempotency key is {len(key)} characters; Spruce allows {MAX_IDEMPOTENCY_KEY}")
    if not key.isascii() or not key.isprintable():
        raise ValueError("idempotency key must be printable ASCII (it is sent as a header)")


def spruce_client(runtime) -> SpruceClient:
    spruce = spruce_settings(runtime.config)
    return shared_client(SpruceClient, runtime, spruce.api_url, spruce.api_token, spruce.rate_limit)
