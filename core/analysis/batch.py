"""Batches: images × templates, run one item at a time through the model's fair queue, resumable after a restart.

State lives in the history database (core/history/batches.py): the images' bytes and every item's
status, so a batch interrupted by a page refresh or a restart resumes with its first unfinished item and
never reruns a finished one. An item's history row and its status are written in one transaction, so at
most the one item that was running when the process died is asked again, and it leaves no row behind.

Decisions:
- Items run image by image (all templates of the first image, then the next), each through
  `ask_and_record` (page "batch"): through the scheduler, so a batch of 200 never starves another
  analyst's question, and into history with a verdict for moderation templates (the review queue).
- A failed item (unreadable image, generation error) records its error and the batch goes on. When the
  model itself goes away (unloaded for a model switch, queue full) the batch pauses instead, with that
  item still to run: failing every item left for a reason none of them has would waste the batch.
- Runner threads are core/analysis/batch_runner.py's: at most one per batch in this process; pausing
  stops at the next item boundary; batches left running by a dead process resume.
- ETA = items left × this run's pace: the mean wall time between consecutive finishes over the last 8 items of
  this run, so waits behind other analysts' questions and history writes are in it. The run's first item (from
  the run's start: warm-up included) counts only until a second one finishes; items of earlier runs (another
  model, a busier hour) never count. The mean of every item's own seconds was off by 5-8x.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

from core.analysis.batch_input import BatchInput, SkippedFile
from core.analysis.compare import CompareColumn
from core.backends.streaming import describe_failure
from core.errors import BatchError, LoupeError, ModelError, ModelUnloadingError, QueueFullError
from core.history import HistoryEntry, HistoryStore, batches, now_utc
from core.history.batches import BatchColumn, BatchResult, BatchSummary
from core.inputs.questions import validate
from core.inputs.templates import by_id
from core.records import GenerationSettings, PreparedImage
from core.serving.engine import Engine
from core.serving.recorded_ask import AskRequest, EntryWriter, ImageUpload, ask_and_record
from core.statuses import BatchItemStatus, BatchStatus
from core.table_export import ExportTable, csv_text

PAGE = "batch"
MAX_COLUMNS = 6


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: items done, failed and left, its status, and the estimated seconds left."""

    batch_id: int
    status: BatchStatus
    total: int
    done: int
    failed: int
    eta_s: float | None  # None until an item of this run has finished (or when no run is going on)
    last: str = ""  # the item just finished, e.g. "shop/1.jpg × Checklist: done"

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def fraction(self) -> float:
        return self.finished / self.total if self.total else 1.0


RESULT_COLUMNS = tuple(f.name for f in fields(BatchResult))


def create(store: HistoryStore, found: BatchInput, columns: Sequence[CompareColumn], *,
           generation: GenerationSettings, session_id: str = "default", max_question_chars: int = 200) -> int:
    """Store a new batch (its images, every item pending); returns its id. Nothing runs yet."""
    if not 1 <= len(columns) <= MAX_COLUMNS:
        raise BatchError(f"Choose between 1 and {MAX_COLUMNS} templates for a batch (got {len(columns)}).")
    if not found.images:
        raise BatchError("A batch needs at least one image.")
    for column in columns:
        validate(column.question, max_chars=max_question_chars)
    spec = [BatchColumn(c.label, c.question, c.template.id if c.template else "",
                        c.template.text_hash if c.template else "") for c in columns]
    return batches.create_batch(store, session_id=session_id, columns=spec, generation=generation,
                                images=[(i.name, i.sha256, i.data) for i in found.images],
                                skipped=[(s.name, s.reason) for s in found.skipped])


RECENT_ITEMS = 8  # the pace is taken over this many of the run's latest items


@dataclass(frozen=True)
class BatchControls:
    """Which buttons a batch offers now."""

    pause: bool  # a runner here has items left to run
    resume: bool
    retry_failed: bool


def progress(store: HistoryStore, batch_id: int, last: str = "", *, run_started: str = "") -> BatchProgress:
    """Where the batch stands; `run_started` (ISO UTC: the live run's start) gives the ETA at that run's pace."""
    status = batches.batch(store, batch_id).status
    counts = batches.counts(store, batch_id)
    eta = None
    if run_started:
        finished = [_epoch(t) for t in batches.finish_times(store, batch_id, run_started)]
        eta = pace_eta(_epoch(run_started), finished, counts.pending)
    return BatchProgress(batch_id, status, counts.pending + counts.done + counts.failed, counts.done, counts.failed,
                         eta, last)


def pace_eta(run_started: float, finished: Sequence[float], pending: int) -> float | None:
    """Seconds left at this run's pace (see the module docstring); None before its first item finished."""
    if not finished:
        return None
    if pending == 0:
        return 0.0
    marks = [run_started, *finished]
    gaps = [later - earlier for earlier, later in zip(marks, marks[1:])]
    recent = gaps[1:][-RECENT_ITEMS:] or gaps  # the first gap holds the run's warm-up
    return pending * sum(recent) / len(recent)


def controls(now: BatchProgress, *, running_here: bool) -> BatchControls:
    """Pause only while a runner here has items left; Resume for an unfinished batch nobody runs."""
    left = now.status != BatchStatus.DONE and now.finished < now.total
    return BatchControls(pause=running_here and left, resume=not running_here and left,
                         retry_failed=not running_here and now.failed > 0)


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _model_gone(error: BaseException) -> bool:
    """The model was unloaded (switched) or its queue is full: every further item would fail the same way."""
    return isinstance(error, (ModelError, QueueFullError, ModelUnloadingError))


def _item_writer(store: HistoryStore, batch_id: int, position: int, column_index: int) -> EntryWriter:
    """Writes an item's history entry together with its status; a model gone leaves the item pending."""
    started = time.perf_counter()

    def write(entry: HistoryEntry, images: tuple[tuple[bytes, PreparedImage], ...],
              failure: BaseException | None) -> HistoryEntry:
        if failure is not None and _model_gone(failure):  # the item stays pending: it runs again on resume
            return store.record(entry, images)
        error = "" if failure is None else str(failure if isinstance(failure, LoupeError) else describe_failure(failure))
        return batches.finish_item(store, batch_id, position, column_index, entry=entry, images=images, error=error,
                                   seconds=time.perf_counter() - started)

    return write


def run(engine: Engine, store: HistoryStore, batch_id: int, *, on_progress: Callable[[BatchProgress], None] | None = None,
        stop: threading.Event | None = None) -> BatchProgress:
    """Run the batch's pending items in order until none is left (status done) or `stop` is set (paused)."""
    spec = batches.batch(store, batch_id)
    run_started = now_utc()
    batches.set_status(store, batch_id, BatchStatus.RUNNING)
    templates = {c.template_id: by_id(c.template_id) for c in spec.columns if c.template_id}
    for position, column_index in batches.pending_items(store, batch_id):
        if stop is not None and stop.is_set():
            batches.set_status(store, batch_id, BatchStatus.PAUSED)
            return progress(store, batch_id)
        name, data = batches.image(store, batch_id, position)
        column = spec.columns[column_index]
        request = AskRequest(session_id=spec.session_id, page=PAGE, question=column.question,
                             images=(ImageUpload(data, name),), template=templates.get(column.template_id),
                             generation=spec.generation)
        write = _item_writer(store, batch_id, position, column_index)
        try:
            ask_and_record(engine, store, request, write).run()
            status = BatchItemStatus.DONE
        except Exception as exc:  # noqa: BLE001 - a failed item records its error; the batch goes on
            if _model_gone(exc):  # not this item's fault: pause, and run it again on resume
                batches.set_status(store, batch_id, BatchStatus.PAUSED)
                return progress(store, batch_id, f"paused: {exc}")
            status = BatchItemStatus.FAILED
        if on_progress is not None:
            on_progress(progress(store, batch_id, f"{name} × {column.label}: {status}", run_started=run_started))
    batches.set_status(store, batch_id, BatchStatus.DONE)
    return progress(store, batch_id, run_started=run_started)


def retry_failed(store: HistoryStore, batch_id: int) -> int:
    """Put the failed items back in the queue (their failed history rows stay); returns how many."""
    batches.batch(store, batch_id)  # a missing batch is a HistoryError
    return batches.retry_failed(store, batch_id)


def list_batches(store: HistoryStore, *, limit: int = 50) -> tuple[BatchSummary, ...]:
    return batches.list_batches(store, limit=limit)


def results(store: HistoryStore, batch_id: int) -> tuple[BatchResult, ...]:
    """One row per item, in run order: image name, template label, status, verdict, answer, error, history id."""
    return batches.results(store, batch_id)


def skipped(store: HistoryStore, batch_id: int) -> tuple[SkippedFile, ...]:
    return tuple(SkippedFile(name, why) for name, why in batches.batch(store, batch_id).skipped)


def export_table(store: HistoryStore, batch_id: int) -> ExportTable:
    """The results as the table both downloads are made from (core/table_export.py)."""
    return ExportTable.from_dicts(f"loupe-batch-{batch_id}", RESULT_COLUMNS,
                                  (asdict(r) for r in results(store, batch_id)))


def export_csv(store: HistoryStore, batch_id: int) -> str:
    return csv_text(export_table(store, batch_id))


def export_json(store: HistoryStore, batch_id: int) -> str:
    return json.dumps({"batch": batch_id, "items": [asdict(r) for r in results(store, batch_id)],
                       "skipped": [asdict(s) for s in skipped(store, batch_id)]}, ensure_ascii=False, indent=1)
