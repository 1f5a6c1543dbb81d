"""The interface in Chinese and English in a real headless Chromium: a Chinese browser in Shanghai gets the GPU
monitor and History in Chinese with Shanghai times; the sidebar switch turns them English and the choice holds
across pages; an English browser gets English. Screenshots in test-output/interface_*.png."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.history import HistoryStore
from core.history.entry import HistoryEntry
from core.statuses import EntryStatus
from tests.e2e.conftest import CHROMIUM, OUTPUT, serve_streamlit, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


@pytest.fixture
def auto_language_url(loupe_home: Path) -> Iterator[str]:
    """The dashboard with interface_language = auto (the browser's language), one answered entry in history."""
    HistoryStore(loupe_home / "history.sqlite3").record(HistoryEntry(
        session_id="analyst01", page="moderation", question="这件商品的描述是否合规？", status=EntryStatus.ANSWERED,
        answer="通过", verdict="pass", created_at="2026-12-01T23:59:05.000+00:00", output_tokens=1))
    yield from serve_streamlit(env={"LOUPE_INTERFACE_LANGUAGE": "auto"})


def _page(chromium, locale: str, zone: str):
    page = chromium.new_context(viewport={"width": 1440, "height": 1400}, locale=locale,
                                timezone_id=zone).new_page()
    page.set_default_timeout(120_000)
    return page


def _shot(page, name: str) -> None:
    settle(page)
    page.screenshot(path=str(OUTPUT / f"interface_{name}.png"), full_page=True)


def test_gpu_monitor_and_history_in_both_languages(auto_language_url: str, chromium) -> None:
    from playwright.sync_api import expect

    page = _page(chromium, "zh-CN", "Asia/Shanghai")
    page.goto(f"{auto_language_url}/gpu_monitor")
    expect(page.get_by_role("heading", name="GPU 监控", exact=True)).to_be_visible()
    expect(page.get_by_text("时间窗口", exact=True)).to_be_visible()
    expect(page.get_by_text("分片方案：")).to_be_visible()
    _shot(page, "gpu_monitor_zh")

    page.get_by_role("link", name="历史记录").click()
    expect(page.get_by_role("heading", name="历史记录", exact=True)).to_be_visible()
    expect(page.get_by_text("时间为 Asia/Shanghai").filter(visible=True).first).to_be_visible()
    # 23:59:05 UTC, in Shanghai: the opened entry's line. The table draws its cells on a canvas and keeps their text
    # in a hidden accessibility table, which `.first` and `.nth` found in CI runs: only visible text is counted.
    expect(page.get_by_text("2026-12-02 07:59:05 (Asia/Shanghai)")).to_be_visible()
    # the entry's page, named as the navigation names it
    expect(page.get_by_text("电商审核").filter(visible=True).nth(1)).to_be_visible()
    _shot(page, "history_zh")

    page.get_by_test_id("stSidebar").get_by_text("English", exact=True).click()
    expect(page.get_by_role("heading", name="History", exact=True)).to_be_visible()
    expect(page.get_by_text("1 query matches", exact=False)).to_be_visible()
    # The choices shown in the boxes, not only the lists (the browser kept "全部会话" before they were set again).
    for label, chosen in (("Session", "All sessions"), ("Template", "All templates"), ("Outcome", "Any outcome")):
        expect(page.get_by_role("combobox", name=label)).to_have_value(chosen)
    # the page column, in English too
    expect(page.get_by_text("E-commerce moderation").filter(visible=True).first).to_be_visible()
    _shot(page, "history_en")

    page.get_by_role("link", name="GPU monitor").click()  # the choice holds on the next page
    expect(page.get_by_role("heading", name="GPU monitor", exact=True)).to_be_visible()
    expect(page.get_by_text("Shard plan:")).to_be_visible()
    _shot(page, "gpu_monitor_en")

    english = _page(chromium, "en-US", "Europe/Berlin")
    english.goto(f"{auto_language_url}/history")
    expect(english.get_by_role("heading", name="History", exact=True)).to_be_visible()
    expect(english.get_by_text("times in Europe/Berlin")).to_be_visible()
    expect(english.get_by_text("2026-12-02 00:59:05").filter(visible=True).first).to_be_visible()
