"""Every question asked through core.serving.recorded_ask lands in history: answered, failed or stopped; re-runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.errors import HistoryError, ImageError, QuestionError
from core.history import HistoryFilter, HistoryStore, queries
from core.inputs.samples import by_id as sample
from core.inputs.templates import by_id as template
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record, rerun_differences, rerun_request

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history.sqlite3")


def _request(question: str = "图中表格第三列第一行的数值是多少？", image: str = "document-table", **changes) -> AskRequest:
    values = {"session_id": "0123456789ab", "page": "documents", "question": question,
              "images": (ImageUpload(sample(image).read(), image),), "template": template("doc-cell-zh")}
    return AskRequest(**{**values, **changes})


def test_an_answer_is_streamed_then_recorded_with_everything(engine, store: HistoryStore) -> None:
    generation = engine.default_generation(max_new_tokens=12)
    run = ask_and_record(engine, store, _request(image="homework-geometry", generation=generation))
    pieces = list(run)
    entry = store.get(run.entry.id)
    assert entry == run.entry and entry.status == "answered" and entry.answer == run.answer.text
    assert "".join(pieces).strip().startswith(entry.answer[:3])
    assert entry.session_id == "0123456789ab" and entry.page == "documents"
    assert entry.template_id == "doc-cell-zh" and entry.template_hash == template("doc-cell-zh").text_hash
    assert entry.image_notes == ("rotated 90° from EXIF (orientation 6)",)
    assert set(entry.timings) == {"queue", "preprocess", "vision", "prefill", "decode", "total"}
    assert entry.output_tokens == run.answer.output_tokens > 0 and "cpu" in entry.peak_memory_gb
    stamp = entry.stamp
    assert stamp["model"] == "demo-llava-v2" and stamp["dtype"] == "float32" and stamp["attn_implementation"]
    assert stamp["generation"]["max_new_tokens"] == 12 and stamp["torch"] and stamp["transformers"]
    assert store.image(entry.image_hashes[0]).data == sample("homework-geometry").read()


def test_a_moderation_answer_carries_its_parsed_verdict(engine, store: HistoryStore) -> None:
    mod = template("mod-checklist-en")
    run = ask_and_record(engine, store, _request(mod.fill(), "product-router", page="moderation", template=mod,
                                                 generation=engine.default_generation(max_new_tokens=8))).run()
    assert run.verdict.status == "unparsed" and run.entry.verdict == "unparsed"
    assert run.entry.verdict_detail["items"][0]["item"] == "exposure"


@pytest.mark.parametrize(("request_changes", "error"), [
    ({"question": "   "}, QuestionError),
    ({"question": "问" * 201}, QuestionError),
    ({"images": (ImageUpload(b"not an image", "notes.txt"),)}, ImageError),
])
def test_a_refused_question_is_recorded_and_raised(engine, store: HistoryStore, request_changes, error) -> None:
    run = ask_and_record(engine, store, _request(**request_changes))
    with pytest.raises(error) as raised:
        run.run()
    entry = store.get(run.entry.id)
    assert entry.status == "failed" and entry.error == str(raised.value) and entry.error_type == error.__name__
    assert run.error is raised.value and len(entry.image_hashes) == 1


def test_a_reader_that_goes_away_leaves_a_stopped_row(engine, store: HistoryStore) -> None:
    run = ask_and_record(engine, store, _request(generation=engine.default_generation(max_new_tokens=400)))
    pieces = iter(run)
    first = next(pieces)
    pieces.close()
    entry = store.get(run.entry.id)
    assert entry.status == "stopped" and entry.answer.startswith(first) and entry.truncated
    assert "Stopped before the answer was complete" in entry.error


def test_a_rerun_asks_the_same_thing_and_says_what_differs(engine, store: HistoryStore) -> None:
    generation = engine.default_generation(max_new_tokens=10)
    original = ask_and_record(engine, store, _request(generation=generation)).run().entry
    request = rerun_request(store, original.id, "fedcba987654")
    assert request.question == original.question and request.generation == generation
    assert request.images[0].data == sample("document-table").read() and request.rerun_of == original.id
    rerun = ask_and_record(engine, store, request).run().entry
    assert rerun.rerun_of == original.id and rerun.session_id == "fedcba987654"
    assert rerun_differences(original, rerun) == ["answer: identical"]  # greedy on the same model: same answer
    changed = rerun.__class__(**{**rerun.__dict__, "stamp": {**rerun.stamp, "dtype": "bfloat16"}, "answer": "x"})
    assert rerun_differences(original, changed) == ["dtype: float32 → bfloat16", "answer: differs"]


def test_a_rerun_without_its_image_is_refused(engine, store: HistoryStore) -> None:
    failed = ask_and_record(engine, store, _request(images=(ImageUpload(b"junk", "x"),)))
    with pytest.raises(ImageError):
        failed.run()
    with pytest.raises(HistoryError, match="was not kept"):
        rerun_request(store, failed.entry.id, "s")
    with pytest.raises(HistoryError, match="does not exist"):
        rerun_request(store, 999, "s")


KILLED_MID_QUERY = textwrap.dedent("""
    import sys
    from core.serving.engine import load_engine
    from core.history import HistoryStore
    from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
    from core.inputs.samples import by_id
    engine, store = load_engine(), HistoryStore(sys.argv[1])
    image = (ImageUpload(by_id("document-table").read(), "document-table"),)
    for i in range(3):
        ask_and_record(engine, store, AskRequest("killkillkill", "documents", f"q{i}", image,
                                                 generation=engine.default_generation(max_new_tokens=4))).run()
        print("answered", i + 1, flush=True)
    long = ask_and_record(engine, store, AskRequest("killkillkill", "documents", "long", image,
                                                    generation=engine.default_generation(max_new_tokens=4000)))
    for n, piece in enumerate(long):
        if n == 3:
            print("streaming", flush=True)
""")


def test_a_process_killed_mid_query_loses_only_that_query(loupe_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    process = subprocess.Popen([sys.executable, "-c", KILLED_MID_QUERY, str(path)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = []
    for line in process.stdout:
        seen.append(line.strip())
        if line.startswith("streaming"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert seen == ["answered 1", "answered 2", "answered 3", "streaming"]
    store = HistoryStore(path)
    with store.connect() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = queries.listing(store, HistoryFilter(session_id="killkillkill")).rows
    assert [r.question for r in rows] == ["q2", "q1", "q0"] and {r.status for r in rows} == {"answered"}
