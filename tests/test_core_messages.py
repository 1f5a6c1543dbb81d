"""Issue #17 "Two languages": core's own sentences (errors, preparation notes, refusals) carry a message id and
its parameters; the dashboard says them in the analyst's language, and English stays exactly as it was."""
from __future__ import annotations

import importlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ImageError, LoupeError, QuestionError
from core.history import HistoryEntry, HistoryStore
from core.inputs import images, questions, samples
from core.messages import CATALOGUE, Message, MessageText
from core.statuses import EntryStatus
from dashboard.widgets.core_text import core_text_in
from dashboard.widgets.interface_language import field_names, table

ROOT = Path(__file__).resolve().parent.parent
DECLARED = re.compile(r"""MessageText\(\s*["']([a-z0-9_.]+)["']""")


def _declared_in_core() -> dict[str, str]:
    """Every message id core's source declares (by scanning, so a new one cannot be missed) → its module."""
    found: dict[str, str] = {}
    for path in (ROOT / "core").rglob("*.py"):
        if path.name == "messages.py" and path.parent.name == "core":  # its docstring shows an example
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for message_id in DECLARED.findall(path.read_text(encoding="utf-8")):
            assert message_id not in found, f"{message_id} declared in {found[message_id]} and {module}"
            found[message_id] = module
    return found


def test_every_message_id_core_can_emit_is_in_both_tables_and_english_is_cores_own() -> None:
    declared = _declared_in_core()
    assert len(declared) > 30  # the scan does find them
    for module in set(declared.values()):
        importlib.import_module(module)
    assert set(CATALOGUE) == set(declared)  # the registry and the scan agree: nothing declared another way
    en, zh = table("en"), table("zh")
    for message_id, english in CATALOGUE.items():
        key = f"core.{message_id}"
        assert en.get(key) == english, key  # en.toml mirrors core's sentence word for word
        assert key in zh and field_names(zh[key]) == field_names(english), key
    assert {key for key in en if key.startswith("core.")} == {f"core.{i}" for i in CATALOGUE}  # none left over


def test_an_id_is_declared_once_with_one_english_sentence() -> None:
    assert MessageText("question.empty", CATALOGUE["question.empty"]).message_id == "question.empty"
    with pytest.raises(ValueError, match="question.empty"):
        MessageText("question.empty", "Something else.")


def test_errors_keep_their_english_and_carry_the_id_and_parameters() -> None:
    with pytest.raises(QuestionError) as raised:
        questions.validate("长" * 240, max_chars=200)
    assert str(raised.value) == ("The question is 240 characters long; the limit is 200. "
                                 "Shorten it or split it into several questions.")
    assert raised.value.message_id == "question.too_long" and raised.value.params == {"length": 240, "limit": 200}
    plain = LoupeError("said without an id")
    assert plain.message is None and plain.message_id == "" and plain.params == {}


def test_a_sideways_photos_note_carries_its_id_and_is_said_in_chinese() -> None:
    prepared = images.prepare(samples.by_id("homework-geometry").read())
    assert prepared.notes == ("rotated 90° from EXIF (orientation 6)",)
    assert [n.message_id for n in prepared.note_messages] == ["image.exif_rotated_90"]
    assert core_text_in("zh", prepared.note_messages[0]) == "按 EXIF 方向信息旋转 90°（方向 6）"
    assert core_text_in("en", prepared.note_messages[0], str) == "rotated 90° from EXIF (orientation 6)"


def test_parameters_are_escaped_and_an_untranslated_or_plain_sentence_shows_english() -> None:
    with pytest.raises(ImageError) as raised:
        from core.inputs import video
        video.prepare_video(b"x", name="**bold**[x](http://e.vil).avi")
    text = core_text_in("zh", raised.value)
    assert text.startswith("\\*\\*bold\\*\\*\\[x\\]") and "不是 Loupe 支持的视频" in text  # the name stays text
    unknown = Message("nowhere.not_in_any_table", "An *English* sentence.", {})
    assert core_text_in("zh", unknown) == "An \\*English\\* sentence."
    assert core_text_in("zh", "plain *text*") == "plain \\*text\\*"
    assert core_text_in("zh", LoupeError("no id here")) == "no id here"


def _jpeg_with_orientation(orientation: int) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", (40, 20), "red").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_history_keeps_the_ids_of_an_error_and_of_the_notes(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    prepared = images.prepare(_jpeg_with_orientation(3), max_width=30)
    try:
        images.prepare(b"not an image")
    except ImageError as exc:
        error = exc
    entry = store.record(HistoryEntry.from_answer(
        None, session_id="s", page="playground", question="q?", error=error, image_notes=prepared.notes,
        image_note_messages=prepared.note_messages))
    back = store.get(entry.id)
    assert back is not None and back.status == EntryStatus.FAILED and back.error == str(error)
    assert back.error_message == error.message and back.image_note_messages == prepared.note_messages
    assert back.image_notes == ("rotated 180° from EXIF (orientation 3)", "resized 40×20 → 30×15")
    assert [core_text_in("zh", n, str) for n in back.image_note_messages] == [
        "按 EXIF 方向信息旋转 180°（方向 3）", "已缩小：40×20 → 30×15"]
    assert core_text_in("zh", back.error_message, str) == (
        "无法读取此文件：它不是 Loupe 支持的图片（支持 JPEG、PNG、WebP、BMP、GIF、TIFF）。")


def test_a_refused_batch_upload_names_the_file_as_text_in_chinese() -> None:
    from core.analysis import batch_input
    from core.errors import BatchError
    from core.serving.recorded_ask import ImageUpload

    with pytest.raises(BatchError) as raised:
        batch_input.collect([ImageUpload(b"PK\x03\x04 broken", "**shop**.zip")])
    assert str(raised.value) == "“**shop**.zip” is not a zip archive, or it is damaged. Upload images or a .zip of images."
    assert core_text_in("zh", raised.value) == "“\\*\\*shop\\*\\*.zip”不是 zip 压缩包，或已损坏。请上传图片，或一个图片 zip 包。"
