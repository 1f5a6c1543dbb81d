"""Core's sentences in the Chinese interface, in a real headless Chromium (issue #17 "Two languages"): the
sideways homework photo's preparation note and the refusal of an attachment that is not an image are Chinese.
Screenshot: test-output/core_messages_zh.png."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM, OUTPUT, serve_streamlit, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]
NOT_AN_IMAGE = "无法读取此文件：它不是 Loupe 支持的图片（支持 JPEG、PNG、WebP、BMP、GIF、TIFF）。"


@pytest.fixture
def chinese_url(loupe_home: Path) -> Iterator[str]:
    yield from serve_streamlit(env={"LOUPE_INTERFACE_LANGUAGE": "zh", "LOUPE_MAX_NEW_TOKENS": "8"})


def test_a_preparation_note_and_a_refusal_in_chinese(chinese_url: str, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{chinese_url}/education")
    expect(page.get_by_role("heading", name="教育", exact=True)).to_be_visible()
    expect(page.get_by_text("示例：JPEG 1080×1350 · 处理：按 EXIF 方向信息旋转 90°（方向 6）")).to_be_visible()
    expect(page.get_by_text("手机拍的作业纸，横着存储（EXIF 方向 6）", exact=False)).to_be_visible()
    settle(page)
    page.get_by_test_id("stChatInput").locator('input[type="file"]').set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"a text file, not a picture"}])
    page.get_by_test_id("stChatInputTextArea").fill("这是什么？")
    page.get_by_test_id("stChatInputSubmitButton").click()
    expect(page.get_by_text(NOT_AN_IMAGE)).to_be_visible()  # core's ImageError, recorded, drawn from history
    settle(page)
    page.screenshot(path=str(OUTPUT / "core_messages_zh.png"), full_page=True)
    shown = page.locator('[data-testid="stApp"]').inner_text()
    assert "not an image Loupe can read" not in shown and "rotated 90° from EXIF" not in shown
