"""Keyboard review in a real headless Chromium (issue #17 item 8): five moderation results, worked through
with the keys a (agree), 2 (needs review), n (next) and p (previous); the verdicts recorded are checked in
history. Screenshot in test-output/review_keys.png."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.analysis import review
from core.history import HistoryEntry, HistoryStore
from core.inputs.images import prepare
from tests.e2e.conftest import CHROMIUM, OUTPUT, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]
ITEMS = [{"item": "claims", "label": "Misleading claims", "result": "reject", "reason": "“全网最便宜”"},
         {"item": "exposure", "label": "Exposure", "result": "pass", "reason": "none"},
         {"item": "brand", "label": "Brand misuse", "result": "needs_review", "reason": "a logo like another's"}]


@pytest.fixture
def five_results(loupe_home: Path) -> list[int]:
    store = HistoryStore(loupe_home / "history.sqlite3")
    ids = []
    for n, (colour, status) in enumerate([("navy", "reject"), ("red", "pass"), ("green", "reject"),
                                          ("orange", "needs_review"), ("purple", "pass")]):
        buffer = io.BytesIO()
        Image.new("RGB", (320, 200), colour).save(buffer, "PNG")
        data = buffer.getvalue()
        prepared = prepare(data)
        entry = HistoryEntry(session_id="abcdefabcdef", page="moderation", question=f"Check product photo {n + 1}",
                             status="answered", answer=f"raw answer {n + 1}", template_id="mod-checklist-en",
                             verdict=status, verdict_detail={"status": status, "items": ITEMS},
                             image_hashes=(prepared.sha256,))
        ids.append(store.record(entry, ((data, prepared),)).id)
    return ids


def test_keyboard_review_of_five_items(five_results: list[int], app_url: str, loupe_home: Path, browser_page) -> None:
    from playwright.sync_api import expect

    page, ids = browser_page, five_results
    page.goto(f"{app_url}/review")
    expect(page.get_by_text(f"Result 1 of 5 · #{ids[0]}", exact=False)).to_be_visible()
    settle(page)
    page.get_by_role("heading", name="Review", exact=True).click()  # focus on the page, not in a field
    page.keyboard.press("a")
    expect(page.get_by_text(f"Result 1 of 4 · #{ids[1]}", exact=False)).to_be_visible()
    settle(page)
    page.keyboard.press("2")
    expect(page.get_by_text(f"Result 1 of 3 · #{ids[2]}", exact=False)).to_be_visible()
    settle(page)
    page.keyboard.press("n")
    expect(page.get_by_text(f"Result 2 of 3 · #{ids[3]}", exact=False)).to_be_visible()
    settle(page)
    page.keyboard.press("p")
    expect(page.get_by_text(f"Result 1 of 3 · #{ids[2]}", exact=False)).to_be_visible()
    settle(page)
    # Typing in the note is typing, not a shortcut: "a" and "n" land in the field and nothing is saved.
    note = page.get_by_label("Note")
    note.click()
    note.type("an")
    expect(note).to_have_value("an")
    page.get_by_role("heading", name="Review", exact=True).click()
    settle(page)
    page.keyboard.press("z")
    expect(page.get_by_role("dialog")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "review_zoom.png"))
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    settle(page)
    page.screenshot(path=str(OUTPUT / "review_keys.png"), full_page=True)
    store = HistoryStore(loupe_home / "history.sqlite3")
    recorded = [review.get(store, i).review for i in ids]
    assert recorded[0] is not None and recorded[0].agreed and recorded[0].label == "reject"
    assert recorded[1] is not None and recorded[1].label == "needs_review" and not recorded[1].agreed
    assert recorded[2:] == [None, None, None]
