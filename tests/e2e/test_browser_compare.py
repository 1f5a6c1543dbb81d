"""A compare run in a real headless Chromium: two templates side by side on the sample product photo, the word
diff between them, and the two answers in history. Screenshot in test-output/compare.png."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.history import HistoryFilter, HistoryStore, queries
from tests.e2e.conftest import CHROMIUM, OUTPUT, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


@pytest.mark.parametrize("browser_page", [2000], indirect=True)  # a taller page: both columns and the diff
def test_compare_two_templates_in_chromium(app_url: str, loupe_home: Path, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{app_url}/compare")
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_role("heading", name="Comparison #1")).to_be_visible()
    expect(page.get_by_text("Word diff")).to_be_visible()
    expect(page.locator(".loupe-diff")).to_be_visible()
    expect(page.get_by_text("batched", exact=False).first).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "compare.png"), full_page=True)
    rows = queries.listing(HistoryStore(loupe_home / "history.sqlite3"), HistoryFilter(pages=("compare",))).rows
    assert len(rows) == 2 and {r.template_id for r in rows} == {"mod-checklist-en", "mod-claims-en"}
