"""A batch killed (SIGKILL) right after an item's history row is written never runs that item twice.

The item's history row and its status are one transaction (core/history/batches.finish_item): a process
killed between the two leaves neither, so the item is still pending and runs exactly once on resume. Before,
the row was committed first and the status after: 3 of 7 real kill -9s re-ran a finished item.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.analysis import batch
from core.analysis.batch_input import collect
from core.analysis.compare import CompareColumn
from core.history import HistoryFilter, HistoryStore, queries
from core.serving.recorded_ask import ImageUpload
from core.statuses import BatchItemStatus, BatchStatus
from tests.image_factory import encode

# Runs the batch in a child process that dies the instant the first item's status is about to be written, after
# its history row: SQLite's trace callback sees every statement before it runs, whatever code issues it.
_CHILD = """
import os, signal, sqlite3, sys
from core.analysis import batch
from core.history import HistoryStore
from core.serving.engine import load_engine
from core.settings import load_settings

real_connect = sqlite3.connect

def die_before_an_items_status(sql):
    if sql.lstrip().upper().startswith("UPDATE BATCH_ITEMS SET STATUS"):
        os.kill(os.getpid(), signal.SIGKILL)

def connect(*args, **kwargs):
    db = real_connect(*args, **kwargs)
    db.set_trace_callback(die_before_an_items_status)
    return db

sqlite3.connect = connect
home, model, db_path, batch_id = sys.argv[1:]
engine = load_engine(load_settings(home=home, model=model))
batch.run(engine, HistoryStore(db_path), int(batch_id))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_batch_killed_after_an_items_row_runs_that_item_once_on_resume(engine, loupe_home: Path,
                                                                         demo_model_dir: Path) -> None:
    store = HistoryStore(loupe_home / "history.sqlite3")
    images = [ImageUpload(encode(Image.new("RGB", (64, 48), colour), "PNG"), f"{colour}.png") for colour in ("navy", "teal")]
    batch_id = batch.create(store, collect(images), [CompareColumn("free", "What is this?")],
                            generation=engine.default_generation(max_new_tokens=3), session_id="analyst")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(demo_model_dir.parent.parent), str(demo_model_dir),
         str(store.path), str(batch_id)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]

    rows = queries.listing(store, HistoryFilter(pages=(batch.PAGE,))).rows
    assert rows == ()  # the killed transaction took the row with it
    assert [r.status for r in batch.results(store, batch_id)] == [BatchItemStatus.PENDING] * 2

    final = batch.run(engine, store, batch_id)  # what resuming does
    assert final.status == BatchStatus.DONE and final.done == 2
    rows = queries.listing(store, HistoryFilter(pages=(batch.PAGE,))).rows
    assert len(rows) == 2 and {r.status for r in rows} == {"answered"}  # each item answered exactly once
    assert sorted(r.query_id for r in batch.results(store, batch_id)) == sorted(r.id for r in rows)
