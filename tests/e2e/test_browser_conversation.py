"""The conversation in a real headless Chromium: three turns with two images attached to one, and a refresh after
the first turn and after the second that reopen it from history. Screenshots land in test-output/."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.history import HistoryStore, conversations
from tests.e2e.conftest import CHROMIUM, OUTPUT, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


def _png(path: Path, colour: str) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _send(page, question: str, files: list[Path] | None = None) -> None:
    if files:
        page.locator('[data-testid="stChatInput"] input[type="file"]').set_input_files([str(f) for f in files])
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")


def test_three_turns_two_images_and_a_refresh_in_the_middle(app_url: str, loupe_home: Path, browser_page,
                                                            tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(app_url)  # the Playground
    expect(page.get_by_text("As the model sees it")).to_be_visible()
    settle(page)
    _send(page, "What is the title?")
    expect(page.get_by_text("Recorded in history as #1.")).to_be_visible()
    settle(page)
    assert "c=" in page.url
    page.reload()  # mid-conversation: the turn comes back from history
    expect(page.get_by_text("Recorded in history as #1.")).to_be_visible()
    expect(page.get_by_test_id("stChatMessage").get_by_text("What is the title?")).to_be_visible()
    settle(page)
    red, blue = _png(tmp_path / "red.png", "red"), _png(tmp_path / "blue.png", "blue")
    _send(page, "Which of these two squares is darker?", [red, blue])
    expect(page.get_by_text("Recorded in history as #2.")).to_be_visible()
    settle(page)
    page.reload()  # two turns in: both come back, and the third question continues the same conversation
    expect(page.get_by_text("Recorded in history as #2.")).to_be_visible()
    expect(page.get_by_test_id("stChatMessage")).to_have_count(4)
    expect(page.get_by_test_id("stChatMessage").get_by_text("What is the title?")).to_be_visible()
    settle(page)
    _send(page, "And the lighter one?")
    expect(page.get_by_text("Recorded in history as #3.")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stChatMessage")).to_have_count(6)  # question beside answer, three times
    page.screenshot(path=str(OUTPUT / "conversation-three-turns.png"), full_page=True)
    store = HistoryStore(loupe_home / "history.sqlite3")
    first, second, third = conversations.turns(store, page.url.split("c=")[1][:12])
    assert len(second.image_hashes) == 2 and third.image_hashes == second.image_hashes  # the follow-up's images
    assert first.input_tokens < third.input_tokens and {first.status, second.status, third.status} == {"answered"}
