"""The Compare, Review and Batch pages, driven with Streamlit's AppTest on the real demo model (no mocks)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.analysis import batch, batch_runner, compare, review
from core.analysis.batch_input import collect
from core.history import HistoryFilter, HistoryStore, queries
from core.inputs.templates import by_id
from core.serving.recorded_ask import ImageUpload
from tests.app_pages import assert_no_exception, open_page


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "8")


_page = open_page


_ok = assert_no_exception


def _store(home: Path) -> HistoryStore:
    return HistoryStore(home / "history.sqlite3")


def _png(colour: str = "navy") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- Compare ----------------------------------------------------------------------------------------
def test_compare_answers_side_by_side_saves_a_group_and_diffs(loupe_home: Path) -> None:
    at = _page("compare")
    assert at.title[0].value == "Compare"
    assert at.multiselect(key="compare-templates").value == ["mod-checklist-en", "mod-claims-en"]
    at.text_area(key="compare-free").set_value("What is the price?\n图中商品是什么？").run()
    at.button(key="compare-run").click().run()
    _ok(at)
    rows = queries.listing(_store(loupe_home), HistoryFilter(pages=("compare",))).rows
    assert len(rows) == 4 and {r.status for r in rows} == {"answered"}
    assert at.subheader[0].value == "Comparison #1"
    assert sum("tokens ·" in c.value and "batched" in c.value for c in at.caption) == 4
    assert any("loupe-diff" in m.value for m in at.markdown)
    assert any("of words in common" in c.value for c in at.caption)
    at.selectbox(key="compare-diff-b").set_value((0, 3)).run()
    _ok(at)
    at.button(key="compare-rerun").click().run()
    _ok(at)
    assert at.subheader[0].value == "Comparison #2 (re-run of #1)"
    assert len(queries.listing(_store(loupe_home), HistoryFilter(pages=("compare",))).rows) == 8


def test_compare_says_what_is_missing_before_running() -> None:
    at = _page("compare")
    at.multiselect(key="compare-templates").set_value(["doc-title-en"]).run()
    assert any("at least two answers" in i.value for i in at.info)
    assert at.button(key="compare-run").disabled


# -- Review -----------------------------------------------------------------------------------------
def _moderation_results(home: Path, engine) -> list[int]:
    run = compare.compare(engine, _store(home), [ImageUpload(_png(), "a.png"), ImageUpload(_png("red"), "b.png")],
                          [compare.template_column(by_id("mod-claims-en"))],
                          generation=engine.default_generation(max_new_tokens=6))
    return [c.entry.id for c in run.cells]


def test_review_overrides_a_verdict_and_counts_agreement(loupe_home: Path, engine) -> None:
    first, second = _moderation_results(loupe_home, engine)
    at = _page("review")
    assert any("Result 1 of 2" in c.value and f"#{first}" in c.value for c in at.caption)
    assert any(w.value == "Verdict: unparsed — needs review" for w in at.warning)
    assert at.radio(key="review-decision").options == ["Override: pass", "Override: needs review", "Override: reject"]
    assert at.radio(key="review-decision").value is None  # nothing chosen for the analyst on an unreadable answer
    next(b for b in at.button if b.label == "Save review").click().run()
    assert any("Choose a label" in e.value for e in at.error) and review.get(_store(loupe_home), first).review is None
    at.radio(key="review-decision").set_value("reject")
    at.selectbox(key="review-reason").set_value("missed a violation")
    at.text_input(key="review-note").set_value("claims 全网最便宜")
    next(b for b in at.button if b.label == "Save review").click().run()
    _ok(at)
    saved = review.get(_store(loupe_home), first).review
    assert saved.label == "reject" and not saved.agreed and saved.note == "claims 全网最便宜"
    assert any("Result 1 of 1" in c.value and f"#{second}" in c.value for c in at.caption)  # the queue moved on
    table = next(d.value for d in at.dataframe if "kappa" in d.value.columns)
    assert table["template"].tolist() == ["mod-claims-en"] and table["reviewed"].tolist() == [1]
    # Agreement 0% and κ 0 everywhere: said in words, not an empty chart (issue #17 item 8; a chart with
    # agreement is checked in tests/test_review_queue_page.py).
    assert not at.get("plotly_chart") and any("agreed on none of the 1 reviewed" in c.value for c in at.caption)
    at.segmented_control(key="review-shown").set_value(True).run()
    assert any(f"#{first}" in c.value for c in at.caption) and "overridden to reject" in " ".join(
        c.value for c in at.caption)


# -- Batch ------------------------------------------------------------------------------------------
def test_batch_from_a_zip_runs_in_the_background_and_lists_skipped_files(loupe_home: Path) -> None:
    at = _page("batch")
    archive = _zip({"shop/1.png": _png(), "shop/deep/2.png": _png("red"), "shop/notes.txt": b"hi"})
    at.file_uploader(key="batch-uploads").set_value(("photos.zip", archive, "application/zip")).run()
    at.multiselect(key="batch-templates").set_value(["mod-claims-zh", "doc-title-en"]).run()
    at.button(key="batch-start").click().run()
    _ok(at)
    store = _store(loupe_home)
    (listed,) = batch.list_batches(store)
    job = batch_runner.runner(store, listed.id)
    if job is not None:
        job.join(timeout=300)
    at.run()
    _ok(at)
    assert "4/4 items · 4 done · 0 failed · done" in at.get("progress")[0].proto.text
    table = at.dataframe[0].value
    assert table["image"].tolist() == ["photos.zip/shop/1.png"] * 2 + ["photos.zip/shop/deep/2.png"] * 2
    assert table["status"].tolist() == ["done"] * 4
    assert at.dataframe[1].value.to_dict("records") == [{"name": "photos.zip/shop/notes.txt", "reason": "not an image"}]
    rows = queries.listing(store, HistoryFilter(pages=("batch",))).rows
    assert len(rows) == 4 and sum(bool(r.verdict) for r in rows) == 2  # the moderation ones reach review


@pytest.mark.parametrize("name, data, message", [
    ("photos.zip", b"not a zip at all", "is not a zip archive"),
    ("evil.zip", _zip({"../x.png": _png()}), "unsafe name"),
    ("docs.zip", _zip({"a.txt": b"x"}), "No images were found"),
])
def test_a_bad_zip_is_a_clear_message_and_no_batch(loupe_home: Path, name: str, data: bytes, message: str) -> None:
    at = _page("batch")
    at.file_uploader(key="batch-uploads").set_value((name, data, "application/zip")).run()
    at.button(key="batch-start").click().run()
    _ok(at)
    assert any(message in e.value for e in at.error)
    assert batch.list_batches(_store(loupe_home)) == ()


def test_the_batch_uploader_says_its_limit_and_enforces_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue #16 item 6: the limit is shown where the analyst uploads, and it is the setting's.
    monkeypatch.setenv("LOUPE_BATCH_MAX_MB", "50")
    monkeypatch.setenv("LOUPE_BATCH_MAX_FILES", "7")
    uploader = _page("batch").file_uploader(key="batch-uploads")
    assert "50 MB" in uploader.help and "7 images" in uploader.help
    assert uploader.proto.max_upload_size_mb == 50


def test_an_interrupted_batch_resumes_when_the_page_opens(loupe_home: Path, engine) -> None:
    store = _store(loupe_home)
    found = collect([ImageUpload(_png(), "a.png"), ImageUpload(_png("red"), "b.png")])
    batch_id = batch.create(store, found, [compare.CompareColumn("q", "What is it?")],
                            generation=engine.default_generation(max_new_tokens=4))  # "running", no runner: a restart
    at = _page("batch")
    assert any(f"Batch #{batch_id} was interrupted" in t.value for t in at.toast)
    job = batch_runner.runner(store, batch_id)
    if job is not None:
        job.join(timeout=300)
    assert batch.progress(store, batch_id).done == 2
