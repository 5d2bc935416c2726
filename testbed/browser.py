"""A real browser for the console's end-to-end tests: Debian's chromium (`apt-get install
chromium`: Playwright's own download cannot reach its server here), driven by Playwright for
Python; signing in as a person does; and screenshots of the pages, for the test's output folder
and, when RELAY_SCREENSHOTS names a folder, a copy there that outlives pytest's temporary folders
(README's pictures)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

# Sandboxing needs user namespaces a container may not have; the rest keeps chromium from
# reaching out (updates, sync, QUIC) and from stalling on a first-run screen.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS_VARIABLE = "RELAY_SCREENSHOTS"
# A desktop window for the screenshots; every wait of a test ends after this long.
VIEWPORT = {"width": 1280, "height": 860}
TIMEOUT_MS = 10_000
# A phone's screen, in CSS pixels (an iPhone 12 to 15's width).
PHONE = {"width": 390, "height": 844}
# The narrowest phone still about (an iPhone SE's first model): the pages fit it too, so a
# machine whose fonts run wider still fits PHONE.
NARROW_PHONE = {"width": 320, "height": 568}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """chromium's path; without it the test skips, or fails under CI=true (as a missing service)."""
    path = chromium_path()
    if path is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a missing browser is a failure)")
        pytest.skip(message)
    return path


def launch(playwright: Playwright, executable: str) -> Browser:
    # With the back/forward cache a person's browser has (Playwright turns it off): the back
    # button after signing out must not bring a console page back from it either.
    return playwright.chromium.launch(
        executable_path=executable, args=CHROMIUM_ARGS, ignore_default_args=["--disable-back-forward-cache"]
    )


def sign_in(page: Page, email: str, password: str) -> None:
    """Sign in through the sign-in page's form, as a person does; ends on the Overview."""
    page.goto("/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


class Screenshots:
    """Whole-page screenshots into `folder` (and a copy into RELAY_SCREENSHOTS' folder, if set)."""

    def __init__(self, folder: Path, keep: str | None = None):
        self.folder = folder
        self.keep = Path(keep) if keep else None

    def take(self, page: Page, name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.keep / path.name)
        return path


@contextmanager
def browsing(browser: Browser, base_url: str, viewport: dict | None = None) -> Iterator[Page]:
    """A page in a browser context of its own (its own cookies: one person), closed after; a
    desktop window unless `viewport` says otherwise (PHONE)."""
    context = browser.new_context(base_url=base_url, viewport=viewport or VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def csrf_token_of(page: Page) -> str:
    """The CSRF token the page's forms carry (every signed-in page has the Sign out form)."""
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token, "the page has no form with a CSRF token"
    return token


def form_action(page: Page, button_name: str) -> str:
    """Where the form of the button named `button_name` posts (the page's own URL when it says
    none); it must post: whatever acts is a POST with the CSRF token."""
    form = page.get_by_role("button", name=button_name, exact=True).locator("xpath=ancestor::form")
    assert (form.get_attribute("method") or "get").lower() == "post", f"{button_name}: its form does not post"
    return form.get_attribute("action") or page.url
