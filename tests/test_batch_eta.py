"""Batch ETA from this run's measured pace, and which controls a batch offers (issue 17 item 10: the ETA was off
by 5-8x; "Pause" showed beside a finished batch)."""
from __future__ import annotations

import time

import pytest

from core.analysis import batch
from core.history import HistoryEntry, HistoryStore, batches
from core.serving.recorded_ask import ImageUpload
from core.statuses import BatchStatus
from tests.test_batch import _batch, _png


@pytest.fixture
def store(loupe_home) -> HistoryStore:
    return HistoryStore(loupe_home / "history.sqlite3")


def test_the_pace_is_this_runs_wall_time_per_item_after_the_first() -> None:
    # the first item took 10 s (warm-up), the next ones 1 s each: 5 left take about 5 s, not 5 × mean(10, 1, 1)
    assert batch.pace_eta(100.0, [110.0, 111.0, 112.0], pending=5) == pytest.approx(5.0)
    assert batch.pace_eta(100.0, [104.0], pending=3) == pytest.approx(12.0)  # one item: all there is to go on
    assert batch.pace_eta(100.0, [], pending=3) is None  # nothing measured in this run yet
    assert batch.pace_eta(100.0, [101.0, 102.0], pending=0) == 0.0
    gaps = [100.0 + 30 * i for i in range(5)] + [250.0 + i for i in range(1, 11)]  # slow, then the last 8 fast
    assert batch.pace_eta(0.0, gaps, pending=10) == pytest.approx(10.0)


def test_a_resumed_batch_is_estimated_from_this_run_not_the_slow_items_before(engine, store) -> None:
    batch_id = _batch(engine, store, [ImageUpload(_png(c), f"{c}.png") for c in ("navy", "red", "lime", "teal")])
    for position, column in ((0, 0), (0, 1)):  # an earlier run finished two items at 40 s each (a slower model)
        entry = HistoryEntry(session_id="analyst", page="batch", question="?", status="answered", answer="ok")
        batches.finish_item(store, batch_id, position, column, entry=entry, images=(), error="", seconds=40.0)
    seen: list[tuple[float, batch.BatchProgress]] = []
    final = batch.run(engine, store, batch_id, on_progress=lambda p: seen.append((time.perf_counter(), p)))
    ended = time.perf_counter()
    assert final.status == "done" and final.done == 8
    first_at, first = seen[0]
    actual_left = ended - first_at
    assert first.eta_s is not None and first.eta_s <= 5 * actual_left + 1.0, (first.eta_s, actual_left)
    assert seen[-1][1].eta_s == 0


def _progress(status: BatchStatus, done: int, total: int = 4) -> batch.BatchProgress:
    return batch.BatchProgress(1, status, total, done, 0, None)


def test_pause_is_offered_only_while_items_are_left_to_run() -> None:
    running = batch.controls(_progress(BatchStatus.RUNNING, 2), running_here=True)
    assert (running.pause, running.resume) == (True, False)
    # the runner thread is still winding down, but the batch is done: nothing to pause
    finished = batch.controls(_progress(BatchStatus.DONE, 4), running_here=True)
    assert (finished.pause, finished.resume, finished.retry_failed) == (False, False, False)
    all_run = batch.controls(_progress(BatchStatus.RUNNING, 4), running_here=True)
    assert not all_run.pause
    paused = batch.controls(_progress(BatchStatus.PAUSED, 2), running_here=False)
    assert (paused.pause, paused.resume) == (False, True)
