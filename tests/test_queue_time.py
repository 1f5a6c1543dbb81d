"""Queue time as its own stage (issue 17 item 6): the scheduler's clock, in the Answer, history and the API.

Three questions are put to the real demo engine at once, from three sessions; a hook on the real vision tower
holds the first until all three are queued (no sleeps), so the third waits behind two whole answers."""
from __future__ import annotations

import gzip
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from PIL import Image

from core.backends.stage_clocks import find_vision_module
from core.history import HistoryEntry, HistoryFilter, HistoryStore, queries
from core.records import Answer, StageTimings
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
from tests.image_factory import encode

ROOT = Path(__file__).resolve().parent.parent


def _generation(answer: Answer) -> float:
    """The model's own stages: what another question waiting behind this one has to sit through at least."""
    t = answer.timings
    return t.vision + t.prefill + t.decode


class FirstVisionGate:
    """Holds the first vision forward pass until opened, so the queue behind it fills deterministically."""

    def __init__(self, engine) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self._handle = find_vision_module(engine.backend.model).register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.entered.set()
        self.release.wait(60)

    def open(self) -> None:
        self._handle.remove()
        self.release.set()


def test_the_third_of_three_questions_counts_its_wait_for_the_first_two(engine, tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    generation = engine.default_generation(max_new_tokens=24)
    image = encode(Image.new("RGB", (96, 64), "teal"), "PNG")
    runs = [ask_and_record(engine, store, AskRequest(
        session_id=f"analyst-{i}", page="playground", question=f"What is in picture {i}?",
        images=(ImageUpload(image, "teal.png"),), generation=generation)) for i in range(3)]
    gate = FirstVisionGate(engine)
    try:
        runs[0].start()
        assert gate.entered.wait(60)  # the first is running, held inside the vision tower
        submitted = time.perf_counter()
        runs[1].start()
        runs[2].start()
    finally:
        gate.open()
    answers = []
    for run in runs:
        run.run()
        answers.append(run.answer)
    waited = time.perf_counter() - submitted
    first, second, third = answers
    assert all(a is not None and a.output_tokens > 0 for a in answers)
    t = third.timings
    # the third waited while the first two generated, and that wait is its own stage, not part of the others
    # (the first's vision stage also holds the gate's wait, partly before the third was submitted: left out)
    held_first = first.timings.prefill + first.timings.decode
    assert t.queue >= held_first + _generation(second) > 0
    assert t.total >= t.queue + t.preprocess + _generation(third)
    # total is the wall time from entering the queue (plus the image's preparation before it), no more
    assert t.total <= waited + t.preprocess + 0.05
    assert first.timings.queue < t.queue and second.timings.queue < t.queue
    # history keeps it, in the entry and as a listing column; the JSON contract carries it
    entry = store.get(runs[2].entry.id)
    assert entry.timings["queue"] == t.queue and entry.timings["total"] == t.total
    rows = {row.id: row for row in queries.listing(store, HistoryFilter()).rows}
    assert rows[runs[2].entry.id].queue_s == t.queue
    assert third.to_json()["timings_s"]["queue"] == round(t.queue, 4)


def test_a_request_that_did_not_wait_has_a_small_queue_time(engine, tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    image = encode(Image.new("RGB", (96, 64), "olive"), "PNG")
    run = ask_and_record(engine, store, AskRequest(
        session_id="alone", page="playground", question="What colour is it?", images=(ImageUpload(image, "o.png"),),
        generation=engine.default_generation(max_new_tokens=4))).run()
    t = run.answer.timings
    assert 0 <= t.queue < t.total and t.total >= t.queue + t.decode


def test_rows_recorded_before_queue_time_read_as_not_measured(tmp_path: Path) -> None:
    # the database as the code before issue 17 left it: one answered row, no queue_s column
    old = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(old, isolation_level=None)) as db:
        db.executescript(gzip.decompress((ROOT / "tests" / "fixtures" / "history_before_13.sql.gz").read_bytes()).decode())
    store = HistoryStore(old)
    (row,) = queries.listing(store, HistoryFilter()).rows
    assert row.queue_s is None and "queue" not in store.get(row.id).timings
    # an entry without a queue reading (a failure before the queue) stays NULL, not 0
    failed = store.record(HistoryEntry(session_id="s", page="playground", question="?", status="failed",
                                       timings={"total": 0.01}, error="bad"))
    assert {r.id: r.queue_s for r in queries.listing(store, HistoryFilter()).rows}[failed.id] is None


def test_queue_time_adds_to_total_and_nothing_else() -> None:
    backend = StageTimings(preprocess=0.2, vision=0.1, prefill=0.3, decode=1.0, total=1.7)
    waited = backend.after_queue(4.0, 4.01)
    assert (waited.queue, round(waited.total, 6)) == (4.0, 5.71)
    assert (waited.preprocess, waited.vision, waited.prefill, waited.decode) == (0.2, 0.1, 0.3, 1.0)
    assert StageTimings().queue == 0.0  # a call that bypassed the queue (the CLI, Compare's batched call)
