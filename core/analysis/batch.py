"""Batches: images × templates, run one item at a time through the model's fair queue, resumable after a restart.

State lives in the history database (tables `batches`, `batch_images`, `batch_items`, see
core/history/tables.py): the images' bytes and every item's status, so a batch interrupted by a page
refresh or a restart resumes with its first unfinished item and never reruns a finished one. An item
is finished once its answer (or its error) is in history; its status is written right after, so at
most the one item that was running when the process died is asked again.

Decisions:
- Items run image by image (all templates of the first image, then the next), each through
  `ask_and_record` (page "batch"): through the scheduler, so a batch of 200 never starves another
  analyst's question, and into history with a verdict for moderation templates (the review queue).
- A failed item (unreadable image, generation error) records its error and the batch goes on. When the
  model itself goes away (unloaded for a model switch, queue full) the batch pauses instead, with that
  item still to run: failing every item left for a reason none of them has would waste the batch.
- One runner thread per batch in this process (`start()` is idempotent); pausing stops at the next
  item boundary. `resume_interrupted()` restarts every batch that was running when the process died.
- ETA = mean seconds of the items finished so far × items left.
"""
from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.analysis.batch_input import BatchInput
from core.analysis.compare import CompareColumn
from core.backends.streaming import describe_failure
from core.errors import BatchError, HistoryError, LoupeError, ModelError, ModelUnloadingError, QueueFullError
from core.history import HistoryStore
from core.history import tables as history_tables
from core.history.store import now_utc
from core.inputs.questions import validate
from core.inputs.templates import by_id
from core.records import GenerationSettings
from core.serving.engine import Engine
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record

PAGE = "batch"
MAX_COLUMNS = 6


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: items done, failed and left, its status, and the estimated seconds left."""

    batch_id: int
    status: str  # running | paused | done
    total: int
    done: int
    failed: int
    eta_s: float | None  # None until an item has finished
    last: str = ""  # the item just finished, e.g. "shop/1.jpg × Checklist: done"

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def fraction(self) -> float:
        return self.finished / self.total if self.total else 1.0


def create(store: HistoryStore, found: BatchInput, columns: Sequence[CompareColumn], *,
           generation: GenerationSettings, session_id: str = "default", max_question_chars: int = 200) -> int:
    """Store a new batch (its images, every item pending); returns its id. Nothing runs yet."""
    if not 1 <= len(columns) <= MAX_COLUMNS:
        raise BatchError(f"Choose between 1 and {MAX_COLUMNS} templates for a batch (got {len(columns)}).")
    if not found.images:
        raise BatchError("A batch needs at least one image.")
    for column in columns:
        validate(column.question, max_chars=max_question_chars)
    spec = [{"label": c.label, "question": c.question, "template_id": c.template.id if c.template else "",
             "template_hash": c.template.text_hash if c.template else ""} for c in columns]
    skipped = [{"name": s.name, "reason": s.reason} for s in found.skipped]
    history_tables.ready(store)
    with store.transaction() as db:
        batch_id = db.execute(
            "INSERT INTO batches (created_at, session_id, status, columns, generation, skipped) VALUES (?, ?, ?, ?, ?, ?)",
            (now_utc(), session_id, "running", json.dumps(spec, ensure_ascii=False),
             json.dumps(generation.to_dict()), json.dumps(skipped, ensure_ascii=False))).lastrowid
        db.executemany("INSERT INTO batch_images (batch_id, position, name, sha256, data) VALUES (?, ?, ?, ?, ?)",
                       [(batch_id, i, image.name, image.sha256, image.data) for i, image in enumerate(found.images)])
        db.executemany("INSERT INTO batch_items (batch_id, image_position, column_index) VALUES (?, ?, ?)",
                       [(batch_id, i, j) for i in range(len(found.images)) for j in range(len(columns))])
    return int(batch_id)


def _spec(store: HistoryStore, batch_id: int) -> dict[str, Any]:
    history_tables.ready(store)
    with store.connect() as db:
        row = db.execute("SELECT session_id, status, columns, generation, skipped, created_at FROM batches "
                         "WHERE id = ?", (batch_id,)).fetchone()
    if row is None:
        raise HistoryError(f"Batch #{batch_id} does not exist.")
    return {"session_id": row[0], "status": row[1], "columns": json.loads(row[2]),
            "generation": GenerationSettings(**json.loads(row[3])), "skipped": json.loads(row[4]), "created_at": row[5]}


def _set_status(store: HistoryStore, batch_id: int, status: str) -> None:
    with store.transaction() as db:
        db.execute("UPDATE batches SET status = ?, finished_at = ? WHERE id = ?",
                   (status, now_utc() if status == "done" else "", batch_id))


def progress(store: HistoryStore, batch_id: int, last: str = "") -> BatchProgress:
    spec = _spec(store, batch_id)
    with store.connect() as db:
        counts = dict(db.execute("SELECT status, count(*) FROM batch_items WHERE batch_id = ? GROUP BY status",
                                 (batch_id,)).fetchall())
        mean = db.execute("SELECT avg(seconds) FROM batch_items WHERE batch_id = ? AND status != 'pending'",
                          (batch_id,)).fetchone()[0]
    pending = counts.get("pending", 0)
    total = sum(counts.values())
    eta = None if mean is None else mean * pending
    return BatchProgress(batch_id, spec["status"], total, counts.get("done", 0), counts.get("failed", 0), eta, last)


def _model_gone(error: Exception) -> bool:
    """The model was unloaded (switched) or its queue is full: every further item would fail the same way."""
    return isinstance(error, (ModelError, QueueFullError, ModelUnloadingError))


def run(engine: Engine, store: HistoryStore, batch_id: int, *, on_progress: Callable[[BatchProgress], None] | None = None,
        stop: threading.Event | None = None) -> BatchProgress:
    """Run the batch's pending items in order until none is left (status done) or `stop` is set (paused)."""
    spec = _spec(store, batch_id)
    _set_status(store, batch_id, "running")
    templates = {c["template_id"]: by_id(c["template_id"]) for c in spec["columns"] if c["template_id"]}
    with store.connect() as db:
        pending = db.execute("SELECT image_position, column_index FROM batch_items WHERE batch_id = ? AND "
                             "status = 'pending' ORDER BY image_position, column_index", (batch_id,)).fetchall()
    for position, column_index in pending:
        if stop is not None and stop.is_set():
            _set_status(store, batch_id, "paused")
            return progress(store, batch_id)
        with store.connect() as db:
            name, data = db.execute("SELECT name, data FROM batch_images WHERE batch_id = ? AND position = ?",
                                    (batch_id, position)).fetchone()
        column = spec["columns"][column_index]
        request = AskRequest(session_id=spec["session_id"], page=PAGE, question=column["question"],
                             images=(ImageUpload(data, name),), template=templates.get(column["template_id"]),
                             generation=spec["generation"])
        started = time.perf_counter()
        asked = ask_and_record(engine, store, request)
        error = ""
        try:
            asked.run()
        except Exception as exc:  # noqa: BLE001 - a failed item records its error; the batch goes on
            if _model_gone(exc):  # not this item's fault: pause, and run it again on resume
                _set_status(store, batch_id, "paused")
                return progress(store, batch_id, f"paused: {exc}")
            error = str(exc if isinstance(exc, LoupeError) else describe_failure(exc))
        status = "failed" if error else "done"
        with store.transaction() as db:
            db.execute("UPDATE batch_items SET status = ?, query_id = ?, error = ?, seconds = ?, finished_at = ? "
                       "WHERE batch_id = ? AND image_position = ? AND column_index = ?",
                       (status, asked.entry.id if asked.entry else None, error, time.perf_counter() - started,
                        now_utc(), batch_id, position, column_index))
        if on_progress is not None:
            on_progress(progress(store, batch_id, f"{name} × {column['label']}: {status}"))
    _set_status(store, batch_id, "done")
    return progress(store, batch_id)


def retry_failed(store: HistoryStore, batch_id: int) -> int:
    """Put the failed items back in the queue (their failed history rows stay); returns how many."""
    _spec(store, batch_id)
    with store.transaction() as db:
        count = db.execute("UPDATE batch_items SET status = 'pending', error = '' WHERE batch_id = ? AND "
                           "status = 'failed'", (batch_id,)).rowcount
        if count:
            db.execute("UPDATE batches SET status = 'paused', finished_at = '' WHERE id = ?", (batch_id,))
    return count


# -- runner threads ----------------------------------------------------------------------------
class BatchJob:
    """A batch running in a background thread of this process; `stop()` pauses it at the next item."""

    def __init__(self, engine: Engine, store: HistoryStore, batch_id: int) -> None:
        self.batch_id = batch_id
        self.latest: BatchProgress | None = None
        self.error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine, store), name=f"loupe-batch-{batch_id}",
                                        daemon=True)

    def _run(self, engine: Engine, store: HistoryStore) -> None:
        try:
            self.latest = run(engine, store, self.batch_id, on_progress=self._note, stop=self._stop)
        except Exception as exc:  # noqa: BLE001 - the page shows it; the batch stays resumable
            self.error = str(exc)

    def _note(self, update: BatchProgress) -> None:
        self.latest = update

    def begin(self) -> BatchJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


_jobs: dict[tuple[str, int], BatchJob] = {}
_jobs_lock = threading.Lock()


def start(engine: Engine, store: HistoryStore, batch_id: int) -> BatchJob:
    """The batch's runner thread in this process, started if it is not running already."""
    key = (str(store.path.resolve()), batch_id)
    with _jobs_lock:
        found = _jobs.get(key)
        if found is None or not found.alive:
            _spec(store, batch_id)
            found = _jobs[key] = BatchJob(engine, store, batch_id).begin()
        return found


def running_job(store: HistoryStore, batch_id: int) -> BatchJob | None:
    """The live runner of a batch in this process, if any."""
    found = _jobs.get((str(store.path.resolve()), batch_id))
    return found if found is not None and found.alive else None


def resume_interrupted(engine: Engine, store: HistoryStore) -> list[int]:
    """Start every batch left "running" with no runner here (the process was restarted); returns their ids."""
    history_tables.ready(store)
    with store.connect() as db:
        ids = [r[0] for r in db.execute("SELECT id FROM batches WHERE status = 'running' ORDER BY id")]
    resumed = [batch_id for batch_id in ids if running_job(store, batch_id) is None]
    for batch_id in resumed:
        start(engine, store, batch_id)
    return resumed


# -- reading ---------------------------------------------------------------------------------------
def list_batches(store: HistoryStore, *, limit: int = 50) -> list[dict[str, Any]]:
    history_tables.ready(store)
    with store.connect() as db:
        rows = db.execute(
            "SELECT b.id, b.created_at, b.status, count(i.rowid), sum(i.status = 'done'), sum(i.status = 'failed') "
            "FROM batches b JOIN batch_items i ON i.batch_id = b.id GROUP BY b.id ORDER BY b.id DESC LIMIT ?",
            (limit,)).fetchall()
    return [{"id": r[0], "created_at": r[1], "status": r[2], "items": r[3], "done": r[4], "failed": r[5]} for r in rows]


RESULT_COLUMNS = ("image", "template", "template_id", "status", "verdict", "answer", "truncated", "output_tokens",
                  "seconds", "error", "query_id")


def results(store: HistoryStore, batch_id: int) -> list[dict[str, Any]]:
    """One row per item, in run order: image name, template label, status, verdict, answer, error, history id."""
    spec = _spec(store, batch_id)
    with store.connect() as db:
        rows = db.execute(
            "SELECT m.name, i.column_index, i.status, q.verdict, q.answer, q.truncated, q.output_tokens, i.seconds, "
            "i.error, i.query_id FROM batch_items i JOIN batch_images m ON m.batch_id = i.batch_id AND "
            "m.position = i.image_position LEFT JOIN queries q ON q.id = i.query_id WHERE i.batch_id = ? "
            "ORDER BY i.image_position, i.column_index", (batch_id,)).fetchall()
    found = []
    for name, j, status, verdict, answer, truncated, tokens, seconds, error, query_id in rows:
        column = spec["columns"][j]
        found.append(dict(zip(RESULT_COLUMNS, (
            name, column["label"], column["template_id"], status, verdict or "", answer or "", bool(truncated),
            tokens or 0, round(seconds, 3), error, query_id))))
    return found


def skipped(store: HistoryStore, batch_id: int) -> list[dict[str, str]]:
    return _spec(store, batch_id)["skipped"]


def export_csv(store: HistoryStore, batch_id: int) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(results(store, batch_id))
    return buffer.getvalue()


def export_json(store: HistoryStore, batch_id: int) -> str:
    return json.dumps({"batch": batch_id, "items": results(store, batch_id), "skipped": skipped(store, batch_id)},
                      ensure_ascii=False, indent=1)
