"""Sign-in in a real headless Chromium (issue #16 item 2): Streamlit listening on every interface with the team
password set shows only the sign-in, refuses a wrong password, lets the right one in; and an error raised
in a script reaches the browser without its traceback (client.showErrorDetails). Screenshots in test-output/."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM, OUTPUT, serve_streamlit, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]
PASSWORD = "pässwörd 🔑"
SECRET = "secret-detail-in-the-exception"


def _serve(script: str | Path, extra_env: dict[str, str]) -> Iterator[str]:
    """On every interface, where a sign-in is required."""
    yield from serve_streamlit(script, address="0.0.0.0", env={"LOUPE_MAX_NEW_TOKENS": "16", **extra_env})


@pytest.fixture
def team_url(loupe_home: Path) -> Iterator[str]:
    yield from _serve("dashboard/app.py", {"LOUPE_DASHBOARD_PASSWORD": PASSWORD})


@pytest.fixture
def failing_url(tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "fails.py"
    script.write_text(f"import streamlit as st\nst.title('Fails')\nraise RuntimeError({SECRET!r})\n", encoding="utf-8")
    yield from _serve(script, {})


def test_the_team_password_guards_every_page(team_url: str, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    for path in ("", "/review", "/batch"):  # every page, not only the first, shows the sign-in
        page.goto(team_url + path)
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        settle(page)
        for hidden in ("Playground", "Review", "Batch"):
            expect(page.get_by_role("heading", name=hidden, exact=True)).to_have_count(0)
        expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
    page.screenshot(path=str(OUTPUT / "access-sign-in.png"), full_page=True)

    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Password", exact=True).fill("pässwörd")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Wrong password")).to_be_visible()
    expect(page.get_by_role("heading", name="Batch", exact=True)).to_have_count(0)

    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Playground", exact=True)).to_be_visible()  # the default page
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "access-signed-in.png"), full_page=True)


def test_an_uncaught_error_shows_no_traceback_in_the_browser(failing_url: str, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(failing_url)
    expect(page.get_by_role("heading", name="Fails")).to_be_visible()
    expect(page.locator('[data-testid="stException"]')).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "access-error.png"), full_page=True)
    shown = page.locator('[data-testid="stApp"]').inner_text()
    for leak in (SECRET, "Traceback", "fails.py", "RuntimeError"):
        assert leak not in shown, (leak, shown)
