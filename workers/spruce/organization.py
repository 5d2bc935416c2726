"""Spruce's organization reads, which `relay doctor` uses to prove the token and the configured
note members: https://developer.sprucehealth.com/reference/organization,
https://developer.sprucehealth.com/reference/organizationmembers"""

from __future__ import annotations

from workers.spruce.client import SpruceClient

ORGANIZATION = "/organization"
MEMBERS = "/organization/members"
MEMBERS_PAGE_SIZE = 500  # the most OrganizationMembers allows
MAX_MEMBER_PAGES = 10


class SpruceOrganizationClient(SpruceClient):
    def organization(self) -> dict:
        """GET /organization → the organization, unwrapped from `{"organization": …}`."""
        response = self._request("GET", ORGANIZATION)
        body = self._http.json("GET", ORGANIZATION, response)
        return (body.get("organization") or {}) if isinstance(body, dict) else {}

    def members(self) -> list[dict]:
        """GET /organization/members: every teammate and team, and the organization itself."""
        return list(self._pages("GET", MEMBERS, "members", page_size=MEMBERS_PAGE_SIZE, max_pages=MAX_MEMBER_PAGES))
