"""Every page of the dashboard, driven with Streamlit's AppTest on the real demo model (no mocks)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.history import HistoryFilter, HistoryStore, queries
from dashboard.widgets import chat_input

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PAGES = {name: f"../pages/{name}.py" for name in ("playground", "documents", "education", "moderation", "history",
                                                   "gpu_monitor")}


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "12")


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    if page is not None:
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _history(home: Path) -> HistoryStore:
    return HistoryStore(home / "history.sqlite3")


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def _box(at: AppTest, page: str):
    return at.chat_input(key=f"{page}-chat")


def _submit(at: AppTest, page: str, question: str | None = None) -> AppTest:
    """Send `question`, or what the box holds (a template's question), from the page's chat box."""
    _box(at, page).set_value(_box(at, page).value if question is None else question).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_playground_labels_the_demo_model_in_the_sidebar() -> None:
    at = _app()
    assert at.title[0].value == "Playground"
    assert any("demo weights — answers are noise" in w.value for w in at.sidebar.warning)
    card = " ".join(m.value for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)
    assert "demo-llava-v2" in card and "transformers" in card and "float32" in card and "sdpa" in card
    assert "Shard plan: `cpu`" in card


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_without_an_error(page: str) -> None:
    at = _app(page)
    assert not at.error, [e.value for e in at.error]


def test_documents_template_fill_submit_answer_and_history_row(loupe_home: Path) -> None:
    at = _app("documents")
    assert at.selectbox(key="documents-template").value == "doc-cell-zh"
    assert _box(at, "documents").value == "图中表格第三列第一行的数值是多少？"
    assert "Sample: PNG 1240×860 · Prepared: used as uploaded, nothing changed" in _captions(at)
    at.text_input(key="documents-doc-cell-zh-column").set_value("二").run()
    assert _box(at, "documents").value == "图中表格第二列第一行的数值是多少？"
    assert _box(at, "documents").proto.max_chars == 200  # the browser counts live against it ("17/200")
    _submit(at, "documents")
    assert [m.name for m in at.chat_message] == ["user", "assistant"]  # the question beside its answer
    assert at.text[0].value == "图中表格第二列第一行的数值是多少？"
    answer = at.code[0].value  # a code block: plain text with a copy button
    assert answer and not at.error
    metrics = " ".join(m.value for m in at.markdown)
    for label in ("queue", "preprocess", "vision", "prefill", "decode", "total", "tokens/s", "process RSS",
                  "tokens in / out"):
        assert label in metrics
    assert "Recorded in history as #1." in _captions(at)
    (row,) = queries.listing(_history(loupe_home), HistoryFilter()).rows
    assert row.page == "documents" and row.template_id == "doc-cell-zh" and row.status == "answered"
    assert row.question == "图中表格第二列第一行的数值是多少？" and row.session_id == at.query_params["session"]
    at.run()  # the answer stays on the page after a rerun, read back from history
    assert at.code[0].value == answer


def test_changing_the_template_refills_the_question_box() -> None:
    at = _app("documents")
    at.selectbox(key="documents-template").set_value("doc-title-en").run()
    assert _box(at, "documents").value.startswith("What is the title of the document")


def test_education_preview_says_the_photo_was_rotated(loupe_home: Path) -> None:
    at = _app("education")
    assert at.selectbox(key="education-sample").value == "homework-geometry"
    assert any("rotated 90° from EXIF (orientation 6)" in c for c in _captions(at))
    assert ["As the model sees it: 1080×1350"] in [i.captions for i in at.image]
    _submit(at, "education")
    (row,) = queries.listing(_history(loupe_home), HistoryFilter(pages=("education",))).rows
    assert _history(loupe_home).get(row.id).image_notes == ("rotated 90° from EXIF (orientation 6)",)


def test_moderation_shows_an_unparsed_verdict_and_keeps_it(loupe_home: Path) -> None:
    at = _app("moderation")
    assert any("resized 1920×1080 → 1280×720" in c for c in _captions(at))
    assert any("Checklist: 暴露 · 违禁品 · 虚假宣传 · 品牌滥用" in c for c in _captions(at))
    _submit(at, "moderation")
    assert any(w.value == "Verdict: unparsed — needs review" for w in at.warning)
    assert "no JSON verdict found in the answer" in _captions(at)
    entry = _history(loupe_home).get(1)
    assert entry.verdict == "unparsed" and entry.verdict_detail["status"] == "unparsed"


def test_an_empty_question_is_refused_on_the_page_and_is_no_history_row(loupe_home: Path) -> None:
    at = _app("playground")
    assert at.selectbox(key="playground-template").value == "free"
    assert not _box(at, "playground").value
    _submit(at, "playground", "  \n ")
    assert [e.value for e in at.error] == ["The question is empty. Type what you want to know about the image."]
    assert _history(loupe_home).count() == 0 and not at.chat_message


def test_a_long_question_is_refused_with_its_length_before_the_model() -> None:
    # The browser takes no keystroke past the box's max_chars (and Streamlit cuts a value sent past it by a
    # script); a longer question that gets to the page anyway is refused there, naming its length.
    at = _app("playground")
    assert _box(at, "playground").proto.max_chars == 200
    long_question = "图中红色方块在什么位置？" * 20  # 240 characters
    assert chat_input.refusal(chat_input.Submitted(long_question, ()), limit=200, max_images=4, has_image=True) == \
        "The question is 240 characters long; the limit is 200. Shorten it or split it into several questions."


def test_a_template_filled_past_the_limit_is_refused_before_the_box(loupe_home: Path) -> None:
    at = _app("playground")
    at.selectbox(key="playground-template").set_value("general-count-zh").run()
    at.text_input(key="playground-general-count-zh-object").set_value("人" * 200).run()
    assert any("the limit is 200" in e.value for e in at.error)
    # the box keeps the last question the template could fill (the browser keeps its text; AppTest shows only
    # values the script sets, so the page's record of its last fill is what is checked)
    assert at.session_state["playground-last-filled"] == ("general-count-zh", "图中有几个人？它们分别在做什么或位于哪里？")


def _png(size=(320, 200), colour="navy") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_uploaded_image_is_previewed_and_asked_about(loupe_home: Path) -> None:
    at = _app("playground")
    at.segmented_control(key="playground-source").set_value("Upload").run()
    at.file_uploader(key="playground-upload").set_value(("mine.png", _png(), "image/png")).run()
    assert "Uploaded: PNG 320×200 · Prepared: used as uploaded, nothing changed" in _captions(at)
    _submit(at, "playground", "What colour is it?")
    entry = _history(loupe_home).get(1)
    assert entry.status == "answered" and entry.question == "What colour is it?"
    assert _history(loupe_home).image(entry.image_hashes[0]).data == _png()


def test_a_file_that_is_not_an_image_is_an_error_in_preview_and_history(loupe_home: Path) -> None:
    at = _app("playground")
    at.segmented_control(key="playground-source").set_value("Upload").run()
    at.file_uploader(key="playground-upload").set_value(("photo.png", b"not really a png", "image/png")).run()
    assert any("not an image Loupe can read" in e.value for e in at.error)
    _submit(at, "playground", "What is this?")
    entry = _history(loupe_home).get(1)
    assert entry.status == "failed" and entry.error_type == "ImageError"


def test_the_session_id_comes_from_the_url_and_stays_there(loupe_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["session"] = "0123456789ab"
    at.run()
    assert at.query_params["session"] == "0123456789ab"
    at.switch_page(PAGES["documents"]).run()
    assert at.query_params["session"] == "0123456789ab"
    _submit(at, "documents")
    assert _history(loupe_home).get(1).session_id == "0123456789ab"
    fresh = _app()
    assert len(fresh.query_params["session"]) == 12 and fresh.query_params["session"] != "0123456789ab"


def test_history_filters_pages_opens_an_entry_and_reruns_it(loupe_home: Path) -> None:
    at = _app("documents")
    _submit(at, "documents")
    at.switch_page(PAGES["moderation"]).run()
    _submit(at, "moderation")
    at.switch_page(PAGES["history"]).run()
    assert not at.exception
    assert any(c.startswith("2 queries match · page 1 of 1") for c in _captions(at))
    assert list(at.dataframe[0].value["id"]) == [2, 1]
    at.selectbox(key="history-outcome").set_value("failed").run()
    assert any(c.startswith("0 queries match") for c in _captions(at)) and at.info
    at.selectbox(key="history-outcome").set_value("").run()
    at.multiselect(key="history-pages").set_value(["documents"]).run()
    assert list(at.dataframe[0].value["id"]) == [1]
    at.text_input(key="history-text").set_value("第三列").run()
    assert any(c.startswith("1 query matches") for c in _captions(at))
    assert at.selectbox(key="history-entry").value == 1
    at.button(key="history-rerun-1").click().run()
    assert not at.exception
    assert any(s.value == "Same conditions, same answer." for s in at.success)
    rerun = _history(loupe_home).get(3)
    assert rerun.rerun_of == 1 and rerun.page == "documents"
    labels = [d.label for d in at.download_button]
    assert labels == ["Export CSV", "Export XLSX", "Export JSON"]


def test_history_session_filter(loupe_home: Path) -> None:
    store = _history(loupe_home)
    from core.history import HistoryEntry

    store.record(HistoryEntry(session_id="ffffffffffff", page="documents", question="someone else's", status="answered"))
    at = _app("documents")
    _submit(at, "documents")
    at.switch_page(PAGES["history"]).run()
    assert any(c.startswith("2 queries match") for c in _captions(at))
    at.selectbox(key="history-session").set_value("this").run()
    assert list(at.dataframe[0].value["session_id"]) == [at.query_params["session"]]
    at.selectbox(key="history-session").set_value("ffffffffffff").run()
    assert list(at.dataframe[0].value["question"]) == ["someone else's"]


def test_a_broken_template_file_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.inputs import templates

    (tmp_path / "bad.toml").write_text("scenario = 'documents'\n[[templates]]\nid = 'BAD'\n", encoding="utf-8")
    monkeypatch.setattr(templates, "TEMPLATES_DIR", tmp_path)
    at = _app("documents")
    assert any("The templates could not be loaded" in e.value for e in at.error)


def test_a_wrong_setting_is_named_on_the_page_as_plain_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "loupe.toml"
    config.write_text('device = "**tpu** [x](javascript:alert(1))"\n', encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(config))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == ["Loupe's settings are wrong; correct them and reload the page."]
    (shown,) = [t.value for t in at.text]
    assert "'device'" in shown and "**tpu** [x](javascript:alert(1))" in shown and "auto, cpu, cuda" in shown


def test_the_uploader_offers_video_only_to_a_model_that_takes_it() -> None:
    """The demo model (transformers backend) takes no video: its uploader lists image types only."""
    at = _app("playground")
    at.segmented_control(key="playground-source").set_value("Upload").run()
    uploader = at.file_uploader(key="playground-upload")
    assert uploader.label == "Upload an image"
    offered = set(uploader.proto.type)
    assert {".png", ".jpg"} <= offered and not offered & {".mp4", ".webm", ".mov"}


def test_a_model_that_takes_video_gets_video_uploads_previewed_with_the_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the capability flag set (the XComposer backend sets it; the demo model's backend is flipped here),
    the uploader takes mp4/webm/mov and the preview shows the tiled strip with the frame count and sampling."""
    from core.backends.transformers_native import TransformersBackend
    from tests.test_video import clip

    monkeypatch.setattr(TransformersBackend, "takes_video", True)
    at = _app("playground")
    at.segmented_control(key="playground-source").set_value("Upload").run()
    uploader = at.file_uploader(key="playground-upload")
    assert uploader.label == "Upload an image or a video" and {".mp4", ".webm", ".mov"} <= set(uploader.proto.type)
    uploader.set_value(("clip.mp4", clip(seconds=3), "video/mp4")).run()
    assert not at.error, [e.value for e in at.error]
    caption = next(c for c in _captions(at) if c.startswith("Uploaded: MP4 64×48 · Prepared: "))
    assert "video: 3 frames sampled from 3.0 s (4.0 fps)" in caption and "560×1680" in caption
