"""Batches: safe zip reading (traversal, bombs, not a zip, no images), a real run, failures, resuming."""
from __future__ import annotations

import io
import json
import os
import struct
import threading
import tomllib
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.analysis import batch, batch_runner
from core.analysis.batch_input import BatchLimits, collect
from core.analysis.compare import CompareColumn, template_column
from core.errors import BatchError, QuestionError
from core.history import HistoryStore
from core.history.batches import BatchSummary
from core.inputs.templates import by_id
from core.serving.recorded_ask import ImageUpload
from core.settings import Settings
from core.statuses import BatchStatus
from tests.image_factory import encode


def _png(colour: str = "navy") -> bytes:
    return encode(Image.new("RGB", (80, 60), colour), "PNG")


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return buffer.getvalue()


@pytest.fixture
def store(loupe_home) -> HistoryStore:
    return HistoryStore(loupe_home / "history.sqlite3")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- reading uploads ---------------------------------------------------------------------------------
def test_zip_folders_are_walked_and_non_images_listed_as_skipped() -> None:
    archive = _zip({"shop/": b"", "shop/a/1.png": _png(), "shop/b/2.jpg": encode(Image.new("RGB", (9, 9)), "JPEG"),
                    "shop/readme.txt": b"hello", "shop/fake.png": b"not really a png", "inner.zip": _zip({}),
                    "__MACOSX/shop/._1.png": b"\x00\x05\x16\x07"})
    found = collect([ImageUpload(archive, "photos.zip"), ImageUpload(_png("red"), "loose.png"),
                     ImageUpload(b"%PDF-1.4", "scan.pdf")])
    assert [i.name for i in found.images] == ["photos.zip/shop/a/1.png", "photos.zip/shop/b/2.jpg", "loose.png"]
    reasons = {s.name: s.reason for s in found.skipped}
    assert reasons["photos.zip/shop/readme.txt"] == "not an image"
    assert reasons["photos.zip/shop/fake.png"].startswith("not an image Loupe can read")
    assert "not opened" in reasons["photos.zip/inner.zip"]
    assert reasons["photos.zip/__MACOSX/shop/._1.png"] == "macOS metadata"
    assert reasons["scan.pdf"].startswith("not an image")


@pytest.mark.parametrize("name", ["../x.png", "shop/../../x.png", "/tmp/x.png", "C:\\x.png", "..\\x.png"])
def test_a_name_leaving_its_folder_refuses_the_whole_zip_and_writes_nothing(name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    archive = _zip({"ok.png": _png(), name: _png("red")})
    with pytest.raises(BatchError, match="unsafe name") as refused:
        collect([ImageUpload(archive, "evil.zip")])
    assert name in str(refused.value) and "nothing was extracted" in str(refused.value)
    assert _tree(tmp_path) == before and not Path("/tmp/x.png").exists()


def test_not_a_zip_is_a_clear_error() -> None:
    with pytest.raises(BatchError, match="“photos.zip” is not a zip archive"):
        collect([ImageUpload(_png(), "photos.zip")])


def test_a_zip_bomb_is_refused_from_its_declared_sizes() -> None:
    bomb = _zip({"big.png": b"\x00" * (20 * 1024 * 1024)})  # deflates about 1000:1
    with pytest.raises(BatchError, match="zip bomb"):
        collect([ImageUpload(bomb, "bomb.zip")])
    many = _zip({f"{i}.png": _png() for i in range(5)}, zipfile.ZIP_STORED)
    with pytest.raises(BatchError, match="would unpack to"):
        collect([ImageUpload(many, "many.zip")], BatchLimits(max_unpacked_bytes=len(_png()) * 3))


def test_a_member_that_lies_about_its_size_is_never_read_past_it() -> None:
    image = _png()
    archive = bytearray(_zip({"a.png": image}, zipfile.ZIP_STORED))
    declared = 100  # patch the uncompressed size in the local header and in the central directory
    local = archive.find(b"PK\x03\x04")
    central = archive.find(b"PK\x01\x02")
    struct.pack_into("<I", archive, local + 22, declared)
    struct.pack_into("<I", archive, central + 24, declared)
    found = None
    with pytest.raises(BatchError, match="No images were found") as refused:
        found = collect([ImageUpload(bytes(archive), "liar.zip")])
    assert found is None and "cannot be read from the zip" in str(refused.value)


def _padded_pngs(count: int, size: int) -> bytes:
    """`count` members that pass the header check (a real PNG, then zeros up to `size`): about 1 KB each deflated."""
    member = _png() + bytes(size - len(_png()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(count):
            archive.writestr(f"{i:03}.png", member)
    return buffer.getvalue()


def test_a_small_zip_of_many_big_members_is_refused_before_any_member_is_read() -> None:
    # Issue #16 item 4: 999 one-megabyte members in about 1 MB took the process up by 1 GB before the
    # 200-image cap refused it; the count and sizes are known from the central directory before any read.
    small_bomb = _padded_pngs(999, 1024 * 1024)
    assert len(small_bomb) < 5 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(BatchError) as refused:
            collect([ImageUpload(small_bomb, "small.zip")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"{peak / 2**20:.0f} MB held while refusing"
    assert "“small.zip”" in str(refused.value) and "999" in str(refused.value) and "200" in str(refused.value)
    assert "Nothing was unpacked" in str(refused.value)


def test_more_images_than_the_limit_in_a_zip_are_refused_from_the_count_before_reading() -> None:
    archive = _zip({f"{i}.png": _png() for i in range(3)} | {"notes.txt": b"x"})
    with pytest.raises(BatchError, match=r"“three.zip” holds 3 images; .*at most 2 images") as refused:
        collect([ImageUpload(archive, "three.zip")], BatchLimits(max_files=2))
    assert "Nothing was unpacked" in str(refused.value)
    # Images already taken from earlier uploads count against the same limit.
    with pytest.raises(BatchError, match="at most 3 images"):
        collect([ImageUpload(_png(), "loose.png"), ImageUpload(archive, "three.zip")], BatchLimits(max_files=3))
    assert len(collect([ImageUpload(archive, "three.zip")], BatchLimits(max_files=3)).images) == 3


def test_a_zip_whose_members_are_each_small_but_together_compress_too_well_is_a_bomb() -> None:
    # Each member stays under the per-member ratio floor (1 MiB); the archive as a whole is 1000:1.
    archive = _padded_pngs(40, 512 * 1024)
    with pytest.raises(BatchError, match="zip bomb") as refused:
        collect([ImageUpload(archive, "many-small.zip")], BatchLimits(max_files=1000))
    assert "20.0 MB" in str(refused.value) and "100" in str(refused.value)


def test_the_streamlit_upload_limit_is_the_batch_limit() -> None:
    # Issue #16 item 6: the server refused uploads over 20 MB (a raw "AxiosError 413") while the Batch page
    # offered 200 MB; one limit, the `batch_max_mb` setting's default.
    config = tomllib.loads((Path(__file__).parent.parent / ".streamlit" / "config.toml").read_text("utf-8"))
    assert config["server"]["maxUploadSize"] == Settings().batch_max_mb


def test_no_images_too_many_and_too_large_are_clear_errors() -> None:
    with pytest.raises(BatchError, match="No images were found: docs.zip/a.txt"):
        collect([ImageUpload(_zip({"a.txt": b"x", "empty/": b""}), "docs.zip")])
    with pytest.raises(BatchError, match="No images were found: nothing"):
        collect([ImageUpload(_zip({}), "empty.zip")])
    with pytest.raises(BatchError, match="at most 2"):
        collect([ImageUpload(_png(), f"{i}.png") for i in range(3)], BatchLimits(max_files=2))
    with pytest.raises(BatchError, match="a batch takes at most"):
        collect([ImageUpload(_png(), "a.png")], BatchLimits(max_upload_bytes=10))
    with pytest.raises(BatchError, match="Upload images"):
        collect([])


# -- running ----------------------------------------------------------------------------------------
def _columns() -> list[CompareColumn]:
    return [template_column(by_id("mod-claims-en")), CompareColumn("free", "What is this?")]


def _batch(engine, store, images: list[ImageUpload], tokens: int = 4) -> int:
    found = collect(images)
    return batch.create(store, found, _columns(), generation=engine.default_generation(max_new_tokens=tokens),
                        session_id="analyst", max_question_chars=engine.settings.max_question_chars)


def test_a_batch_runs_every_item_keeps_going_after_a_failure_and_exports(engine, store) -> None:
    broken = _png()[:60]  # a real PNG header, cut off: listed as an image, fails when decoded
    batch_id = _batch(engine, store, [ImageUpload(_png(), "a.png"), ImageUpload(broken, "broken.png"),
                                      ImageUpload(_png("red"), "c.png")])
    updates: list[batch.BatchProgress] = []
    final = batch.run(engine, store, batch_id, on_progress=updates.append)
    assert final.status == "done" and (final.total, final.done, final.failed) == (6, 4, 2)
    assert [u.finished for u in updates] == [1, 2, 3, 4, 5, 6]
    assert updates[0].eta_s is not None and updates[0].eta_s > 0 and updates[-1].eta_s == 0
    assert updates[2].last == "broken.png × " + _columns()[0].label + ": failed"
    rows = batch.results(store, batch_id)
    assert [r.status for r in rows] == ["done", "done", "failed", "failed", "done", "done"]
    assert "damaged" in rows[2].error and rows[2].query_id  # the failure is in history too
    assert store.get(rows[2].query_id).status == "failed"
    assert rows[0].verdict and not rows[1].verdict  # moderation template: a verdict for the review queue
    entry = store.get(rows[0].query_id)
    assert entry.page == "batch" and entry.template_id == "mod-claims-en" and entry.session_id == "analyst"
    assert json.loads(batch.export_json(store, batch_id))["items"][4]["image"] == "c.png"
    assert batch.export_csv(store, batch_id).splitlines()[0].startswith("image,template,")
    assert batch.retry_failed(store, batch_id) == 2 and batch.run(engine, store, batch_id).failed == 2


def test_an_interrupted_batch_resumes_and_never_reruns_finished_items(engine, store) -> None:
    images = [ImageUpload(_png(c), f"{c}.png") for c in ("navy", "red", "lime")]
    batch_id = _batch(engine, store, images)
    stop = threading.Event()

    def pause_after_three(update: batch.BatchProgress) -> None:
        if update.finished == 3:
            stop.set()

    paused = batch.run(engine, store, batch_id, on_progress=pause_after_three, stop=stop)
    assert paused.status == "paused" and paused.finished == 3
    first_ids = [r.query_id for r in batch.results(store, batch_id)[:3]]
    with store.transaction() as db:  # as if the process had died mid-run: still marked running, no runner
        db.execute("UPDATE batches SET status = 'running' WHERE id = ?", (batch_id,))
    assert batch_runner.resume_interrupted(engine, store) == [batch_id]
    # its runner is alive (not started again) or has finished the batch (no longer "running"): never a second one
    assert batch_runner.resume_interrupted(engine, store) == []
    batch_runner.start(engine, store, batch_id).join(timeout=300)
    rows = batch.results(store, batch_id)
    assert [r.status for r in rows] == ["done"] * 6
    assert [r.query_id for r in rows[:3]] == first_ids
    assert store.count() == 6  # six items, six history rows: nothing ran twice
    assert batch.progress(store, batch_id).status == "done" and batch_runner.resume_interrupted(engine, store) == []


def test_a_batch_checks_its_questions_and_columns_before_storing(engine, store) -> None:
    found = collect([ImageUpload(_png(), "a.png")])
    generation = engine.default_generation(max_new_tokens=4)
    with pytest.raises(QuestionError):
        batch.create(store, found, [CompareColumn("long", "x" * 500)], generation=generation)
    with pytest.raises(BatchError, match="between 1 and 6"):
        batch.create(store, found, [], generation=generation)
    assert batch.list_batches(store) == ()


def test_nothing_is_written_outside_loupe_home(engine, store, loupe_home, tmp_path) -> None:
    outside = tmp_path.parent
    before = {p for p in os.listdir(outside)}
    batch_id = _batch(engine, store, [ImageUpload(_zip({"d/1.png": _png()}), "one.zip")])
    batch.run(engine, store, batch_id)
    assert set(os.listdir(outside)) == before
    (listed,) = batch.list_batches(store)
    assert listed == BatchSummary(id=batch_id, created_at=listed.created_at, status=BatchStatus.DONE, items=2, done=2,
                                  failed=0)


def test_a_batch_pauses_when_its_model_goes_away_and_finishes_once_it_is_back(demo_model_dir, store) -> None:
    from core.serving.engine import load_engine
    from core.settings import load_settings

    own = load_engine(load_settings(home=demo_model_dir.parent.parent, model=str(demo_model_dir)))
    batch_id = _batch(own, store, [ImageUpload(_png(c), f"{c}.png") for c in ("navy", "red")])

    def unload_after_first(update: batch.BatchProgress) -> None:
        if update.finished == 1:
            own.backend.unload()  # what a model switch does

    paused = batch.run(own, store, batch_id, on_progress=unload_after_first)
    assert paused.status == "paused" and (paused.done, paused.failed) == (1, 0) and "not loaded" in paused.last
    own.backend.load()
    final = batch.run(own, store, batch_id)
    assert final.status == "done" and (final.done, final.failed) == (4, 0)
