"""The field report as a browser test: three analysts send a question within a second of each other, each in
their own browser session; all three are answered (queued, never an out-of-memory error) and recorded."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.history import HistoryFilter, HistoryStore, queries
from tests.e2e.conftest import CHROMIUM, OUTPUT, new_page, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"),
]


def test_three_sessions_submitting_at_once_are_all_answered(app_url: str, loupe_home: Path, chromium) -> None:
    from playwright.sync_api import expect

    pages = [new_page(chromium, 1400) for _ in range(3)]
    for page in pages:
        page.goto(f"{app_url}/documents")
        expect(page.get_by_test_id("stChatInputSubmitButton")).to_be_enabled()  # the template's question
        settle(page)
    for page in pages:  # no waiting in between: the three requests meet in the model's queue
        page.get_by_test_id("stChatInputSubmitButton").click()
    for page in pages:
        expect(page.get_by_text("Recorded in history as")).to_be_visible()
        expect(page.get_by_text("tokens/s")).to_be_visible()
    settle(pages[-1])
    pages[-1].screenshot(path=str(OUTPUT / "burst-third-session.png"), full_page=True)
    rows = queries.listing(HistoryStore(loupe_home / "history.sqlite3"), HistoryFilter()).rows
    assert len(rows) == 3 and {r.status for r in rows} == {"answered"} and len({r.session_id for r in rows}) == 3
