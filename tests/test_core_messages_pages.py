"""Issue #17 "Two languages" in the pages (AppTest, demo model): core's refusals, a file that is not an image and
an EXIF-rotated photo's preparation note are Chinese in the Chinese interface, and English as before in English."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.history import HistoryStore
from tests.app_pages import APP, assert_no_exception


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "8")


def _page(page: str, language: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.context = {"locale": "zh-CN" if language == "zh" else "en-US"}
    at.run()
    at.switch_page(f"../pages/{page}.py").run()
    assert_no_exception(at)
    return at


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_a_template_filled_past_the_limit_is_refused_in_chinese() -> None:
    at = _page("playground", "zh")
    at.selectbox(key="playground-template").set_value("general-count-zh").run()
    at.text_input(key="playground-general-count-zh-object").set_value("人" * 200).run()
    assert [e.value for e in at.error] == ["按当前字段，问题长 220 个字符，上限为 200。请缩短字段内容。"]


def test_a_template_filled_past_the_limit_is_refused_in_english_as_before() -> None:
    at = _page("playground", "en")
    at.selectbox(key="playground-template").set_value("general-count-zh").run()
    at.text_input(key="playground-general-count-zh-object").set_value("人" * 200).run()
    assert [e.value for e in at.error] == [
        "With these fields the question is 220 characters long; the limit is 200. Shorten the fields."]


@pytest.mark.parametrize(("language", "preview"), [
    ("zh", "无法读取此文件：它不是 Loupe 支持的图片（支持 JPEG、PNG、WebP、BMP、GIF、TIFF）。"),
    ("en", "This file is not an image Loupe can read \\(accepted: JPEG, PNG, WebP, BMP, GIF, TIFF\\)."),
])
def test_an_upload_that_is_not_an_image_is_refused_in_the_analysts_language(
        loupe_home: Path, language: str, preview: str) -> None:
    at = _page("playground", language)
    at.segmented_control(key="playground-source").set_value("Upload").run()
    at.file_uploader(key="playground-upload").set_value(("notes.png", b"a text file", "image/png")).run()
    assert [e.value for e in at.error] == [preview]
    at.chat_input(key="playground-chat").set_value("What is this?").run()  # core refuses it; history records it
    assert_no_exception(at)
    entry = HistoryStore(loupe_home / "history.sqlite3").get(1)
    assert entry.status == "failed" and entry.error_type == "ImageError"
    assert entry.error == "This file is not an image Loupe can read (accepted: JPEG, PNG, WebP, BMP, GIF, TIFF)."
    # the page is drawn again from history: the preview's error and the failed turn's, both in the language
    assert [e.value for e in at.error] == [preview, preview]


@pytest.mark.parametrize(("language", "caption"), [
    ("zh", "示例：JPEG 1080×1350 · 处理：按 EXIF 方向信息旋转 90°（方向 6）"),
    ("en", "Sample: JPEG 1080×1350 · Prepared: rotated 90° from EXIF (orientation 6)"),
])
def test_a_sideways_photos_preparation_note_is_in_the_analysts_language(language: str, caption: str) -> None:
    at = _page("education", language)
    assert at.selectbox(key="education-sample").value == "homework-geometry"
    assert caption in _captions(at)


def test_the_samples_are_named_and_described_in_chinese() -> None:
    at = _page("education", "zh")
    picker = at.selectbox(key="education-sample")
    assert picker.options[0] == "作业照片：直角三角形"
    assert any(c.startswith("手机拍的作业纸，横着存储（EXIF 方向 6）") for c in _captions(at))
    english = _page("education", "en")
    assert english.selectbox(key="education-sample").options[0] == "Homework photo: right triangle (几何作业)"


def test_the_model_cards_notes_are_in_the_analysts_language() -> None:
    chinese = [c.value for c in _page("playground", "zh").sidebar.caption]
    assert any(c.startswith("快速解码：") for c in chinese), chinese
    assert any(c.startswith("未检测到 GPU（") and c.endswith("）：在 CPU 上运行") for c in chinese), chinese
    english = [c.value for c in _page("playground", "en").sidebar.caption]
    assert any(c.startswith("fast decode: ") for c in english), english
    assert not any("快速解码" in c for c in english)
