"""Stop in a real headless Chromium: pressed while an answer streams, the turn stays with the text that arrived,
marked stopped in the analyst's language with its tokens counted, one Stop button showed while it streamed,
and the next question still works. Screenshots in test-output/conversation_stop_*.png."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.history import HistoryStore, conversations
from core.statuses import EntryStatus
from tests.e2e.conftest import CHROMIUM, OUTPUT, serve_streamlit, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]

# The demo model decodes hundreds of tokens a second: a long answer (no sentence-end trim needed) gives the test
# seconds to press Stop while it streams. The demo model's context holds 4096 positions.
LONG_ANSWER_TOKENS = "3500"


@pytest.fixture
def long_answer_url(loupe_home: Path) -> Iterator[str]:
    yield from serve_streamlit(env={"LOUPE_MAX_NEW_TOKENS": LONG_ANSWER_TOKENS})


def _send(page, question: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")


def _stop_while_streaming(page, question: str) -> None:
    from playwright.sync_api import expect

    turns = page.get_by_test_id("stChatMessage")
    before = turns.count()
    _send(page, question)
    # Text has arrived: the growing answer is drawn (st.text) inside the assistant's turn. That turn is the
    # second new one: the question's own turn (also an st.text) comes first, and `.last` could be it while
    # the answer's turn is not drawn yet (a Stop pressed then kept no text: seen once in CI).
    expect(turns.nth(before + 1).get_by_test_id("stText")).not_to_have_text("")
    # Exactly one Stop shows while it streams (Streamlit's own running indicator has one too, hidden here).
    stop = page.locator("button:visible", has_text="Stop")
    expect(stop).to_have_count(1)
    stop.click()


def test_stop_keeps_what_arrived_marked_stopped_with_its_tokens(long_answer_url: str, loupe_home: Path,
                                                                 browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(long_answer_url)
    expect(page.get_by_text("As the model sees it")).to_be_visible()
    settle(page)
    _stop_while_streaming(page, "Describe every detail of this picture at length.")
    expect(page.get_by_text("Stopped before the answer was complete")).to_be_visible()
    settle(page)
    expect(page.get_by_text("Recorded in history as #1.")).to_be_visible()
    page.screenshot(path=str(OUTPUT / "conversation_stop_en.png"), full_page=True)

    store = HistoryStore(loupe_home / "history.sqlite3")
    (stopped,) = conversations.turns(store, page.url.split("c=")[1][:12])
    assert stopped.status == EntryStatus.STOPPED and stopped.answer and stopped.output_tokens > 0
    turn = page.get_by_test_id("stChatMessage").nth(1)
    expect(turn.get_by_test_id("stCode")).to_contain_text(stopped.answer[:40])  # the text that arrived
    expect(turn.get_by_text(f"/ {stopped.output_tokens}", exact=False)).to_be_visible()  # tokens in / out

    _send(page, "And in one word?")  # the next question still works, in the same conversation
    expect(page.get_by_text("Recorded in history as #2.")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stChatMessage")).to_have_count(4)
    first, second = conversations.turns(store, stopped.conversation_id)
    assert first.id == stopped.id and second.status in (EntryStatus.ANSWERED, EntryStatus.STOPPED)

    page.get_by_test_id("stSidebar").get_by_text("中文", exact=True).click()
    expect(page.get_by_text("回答完成前已停止")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "conversation_stop_zh.png"), full_page=True)
