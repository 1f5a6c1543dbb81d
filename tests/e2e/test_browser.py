"""The README's run command, driven in a real headless Chromium: pick a sample, send the template's question, see the streamed
answer and its history row. Screenshots land in test-output/ (look at them: Chinese must not be boxes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM, OUTPUT, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


def test_documents_sample_to_history_in_chromium(app_url: str, loupe_home: Path, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{app_url}/documents")
    expect(page.get_by_role("heading", name="Documents")).to_be_visible()
    expect(page.get_by_text("demo weights — answers are noise")).to_be_visible()
    expect(page.get_by_text("As the model sees it: 1240×860")).to_be_visible()
    question = page.get_by_test_id("stChatInputTextArea")
    expect(question).to_have_value("图中表格第三列第一行的数值是多少？")
    assert "session=" in page.url
    session = page.url.split("session=")[1][:12]

    page.get_by_test_id("stChatInputSubmitButton").click()
    expect(page.get_by_text("Recorded in history as #1.")).to_be_visible()
    expect(page.get_by_text("tokens/s")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "documents-answer.png"), full_page=True)

    page.get_by_role("link", name="E-commerce moderation").click()
    expect(page.get_by_role("heading", name="E-commerce moderation")).to_be_visible()
    expect(page.get_by_text("As the model sees it: 1280×720")).to_be_visible()
    page.get_by_test_id("stChatInputSubmitButton").click()
    expect(page.get_by_text("Recorded in history as #2.")).to_be_visible()
    expect(page.get_by_text("Verdict: unparsed — needs review")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "moderation-verdict.png"), full_page=True)
    assert f"session={session}" in page.url  # the session survived the page switch

    page.reload()  # a refresh keeps the session
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.get_by_text("2 queries match")).to_be_visible()
    page.get_by_role("combobox", name="Session").click()
    page.get_by_role("option", name=f"This session ({session})").click()
    expect(page.get_by_text("2 queries match")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "history.png"), full_page=True)

    # The live memory chart, with the stage bands of the two questions just asked.
    page.get_by_role("link", name="GPU monitor").click()
    expect(page.get_by_role("heading", name="GPU monitor")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "gpu-monitor.png"), full_page=True)
