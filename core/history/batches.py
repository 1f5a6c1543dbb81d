"""Batch's rows: each batch (its columns, generation settings, skipped files, status), its images' bytes (kept
so an interrupted batch resumes after a restart) and one item per image × column with its status and history
entry. Tables `batches`, `batch_images`, `batch_items`.

An item's history entry and its status are written in one transaction (`finish_item`), so a process killed
between the two cannot leave an answered item pending (it would be asked, and recorded, twice).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from core.errors import HistoryError
from core.history.entry import HistoryEntry
from core.history.store import HistoryStore, insert_entry, now_utc
from core.records import GenerationSettings, PreparedImage
from core.statuses import BatchItemStatus, BatchStatus


@dataclass(frozen=True)
class BatchColumn:
    """One column of a batch: its label and the exact question, with the template it came from ('' if none)."""

    label: str
    question: str
    template_id: str
    template_hash: str


@dataclass(frozen=True)
class StoredBatch:
    """A batch as history keeps it: who, when, its status, columns, generation settings and skipped files."""

    id: int
    created_at: str
    session_id: str
    status: BatchStatus
    columns: tuple[BatchColumn, ...]
    generation: GenerationSettings
    skipped: tuple[tuple[str, str], ...]  # (file name, why it was not run)


@dataclass(frozen=True)
class BatchSummary:
    """One batch in the list: when, its status, and how many items it has, are done and failed."""

    id: int
    created_at: str
    status: BatchStatus
    items: int
    done: int
    failed: int


@dataclass(frozen=True)
class ItemCounts:
    """How many items are pending, done and failed, and the mean seconds of those finished (None: none yet)."""

    pending: int
    done: int
    failed: int
    mean_seconds: float | None


@dataclass(frozen=True)
class BatchResult:
    """One item in run order, with what its history entry says; these fields, in this order, are the columns of
    the results table and of the exports."""

    image: str
    template: str  # the column's label
    template_id: str
    status: BatchItemStatus
    verdict: str  # "" unless a moderation template answered
    answer: str
    truncated: bool
    output_tokens: int
    seconds: float  # rounded to the millisecond
    error: str
    query_id: int | None  # None until the item has run


def create_batch(store: HistoryStore, *, session_id: str, columns: Sequence[BatchColumn],
                 generation: GenerationSettings, images: Sequence[tuple[str, str, bytes]],
                 skipped: Sequence[tuple[str, str]]) -> int:
    """Store a new batch, running, with its images ((name, sha256, bytes) each) and every item pending, and the
    files not run ((name, why) each); returns its id."""
    with store.transaction() as db:
        batch_id = db.execute(
            "INSERT INTO batches (created_at, session_id, status, columns, generation, skipped) VALUES (?, ?, ?, ?, ?, ?)",
            (now_utc(), session_id, BatchStatus.RUNNING, json.dumps([asdict(c) for c in columns], ensure_ascii=False),
             json.dumps(generation.to_dict()),
             json.dumps([{"name": name, "reason": why} for name, why in skipped], ensure_ascii=False))).lastrowid
        db.executemany("INSERT INTO batch_images (batch_id, position, name, sha256, data) VALUES (?, ?, ?, ?, ?)",
                       [(batch_id, i, *image) for i, image in enumerate(images)])
        db.executemany("INSERT INTO batch_items (batch_id, image_position, column_index) VALUES (?, ?, ?)",
                       [(batch_id, i, j) for i in range(len(images)) for j in range(len(columns))])
    return int(batch_id or 0)


def batch(store: HistoryStore, batch_id: int) -> StoredBatch:
    with store.connect() as db:
        row = db.execute("SELECT created_at, session_id, status, columns, generation, skipped FROM batches "
                         "WHERE id = ?", (batch_id,)).fetchone()
    if row is None:
        raise HistoryError(f"Batch #{batch_id} does not exist.")
    return StoredBatch(batch_id, row[0], row[1], BatchStatus(row[2]),
                       tuple(BatchColumn(**c) for c in json.loads(row[3])),
                       GenerationSettings(**json.loads(row[4])),
                       tuple((s["name"], s["reason"]) for s in json.loads(row[5])))


def set_status(store: HistoryStore, batch_id: int, status: BatchStatus) -> None:
    with store.transaction() as db:
        db.execute("UPDATE batches SET status = ?, finished_at = ? WHERE id = ?",
                   (status, now_utc() if status == BatchStatus.DONE else "", batch_id))


def counts(store: HistoryStore, batch_id: int) -> ItemCounts:
    with store.connect() as db:
        found = dict(db.execute("SELECT status, count(*) FROM batch_items WHERE batch_id = ? GROUP BY status",
                                (batch_id,)).fetchall())
        mean = db.execute("SELECT avg(seconds) FROM batch_items WHERE batch_id = ? AND status != ?",
                          (batch_id, BatchItemStatus.PENDING)).fetchone()[0]
    return ItemCounts(found.get(BatchItemStatus.PENDING, 0), found.get(BatchItemStatus.DONE, 0),
                      found.get(BatchItemStatus.FAILED, 0), mean)


def finish_times(store: HistoryStore, batch_id: int, since: str) -> tuple[str, ...]:
    """When each item finished at or after `since` (ISO UTC, as history stamps), in order: one run's pace."""
    with store.connect() as db:
        rows = db.execute("SELECT finished_at FROM batch_items WHERE batch_id = ? AND status != ? AND finished_at >= ? "
                          "ORDER BY finished_at", (batch_id, BatchItemStatus.PENDING, since)).fetchall()
    return tuple(r[0] for r in rows)


def pending_items(store: HistoryStore, batch_id: int) -> list[tuple[int, int]]:
    """(image position, column index) of every pending item, in run order: image by image."""
    with store.connect() as db:
        return [(r[0], r[1]) for r in db.execute(
            "SELECT image_position, column_index FROM batch_items WHERE batch_id = ? AND status = ? "
            "ORDER BY image_position, column_index", (batch_id, BatchItemStatus.PENDING))]


def image(store: HistoryStore, batch_id: int, position: int) -> tuple[str, bytes]:
    """The name and bytes of the batch's image at `position`."""
    with store.connect() as db:
        name, data = db.execute("SELECT name, data FROM batch_images WHERE batch_id = ? AND position = ?",
                                (batch_id, position)).fetchone()
    return name, data


def finish_item(store: HistoryStore, batch_id: int, position: int, column_index: int, *, entry: HistoryEntry,
                images: tuple[tuple[bytes, PreparedImage], ...], error: str, seconds: float) -> HistoryEntry:
    """Record an item's history entry and mark it done (failed, with `error`) in one transaction."""
    with store.transaction() as db:
        recorded = insert_entry(db, entry, images)
        db.execute("UPDATE batch_items SET status = ?, query_id = ?, error = ?, seconds = ?, finished_at = ? "
                   "WHERE batch_id = ? AND image_position = ? AND column_index = ?",
                   (BatchItemStatus.FAILED if error else BatchItemStatus.DONE, recorded.id, error, seconds,
                    now_utc(), batch_id, position, column_index))
    return recorded


def retry_failed(store: HistoryStore, batch_id: int) -> int:
    """Put the failed items back in the queue, the batch paused (their failed history rows stay); how many."""
    with store.transaction() as db:
        count = db.execute("UPDATE batch_items SET status = ?, error = '' WHERE batch_id = ? AND status = ?",
                           (BatchItemStatus.PENDING, batch_id, BatchItemStatus.FAILED)).rowcount
        if count:
            db.execute("UPDATE batches SET status = ?, finished_at = '' WHERE id = ?", (BatchStatus.PAUSED, batch_id))
    return count


def ids_with_status(store: HistoryStore, status: BatchStatus) -> list[int]:
    with store.connect() as db:
        return [r[0] for r in db.execute("SELECT id FROM batches WHERE status = ? ORDER BY id", (status,))]


def list_batches(store: HistoryStore, *, limit: int = 50) -> tuple[BatchSummary, ...]:
    """The newest batches first."""
    with store.connect() as db:
        rows = db.execute(
            "SELECT b.id, b.created_at, b.status, count(i.rowid), sum(i.status = ?), sum(i.status = ?) "
            "FROM batches b JOIN batch_items i ON i.batch_id = b.id GROUP BY b.id ORDER BY b.id DESC LIMIT ?",
            (BatchItemStatus.DONE, BatchItemStatus.FAILED, limit)).fetchall()
    return tuple(BatchSummary(r[0], r[1], BatchStatus(r[2]), r[3], r[4], r[5]) for r in rows)


def results(store: HistoryStore, batch_id: int) -> tuple[BatchResult, ...]:
    """Every item in run order (image by image, column by column)."""
    columns = batch(store, batch_id).columns
    with store.connect() as db:
        rows = db.execute(
            "SELECT m.name, i.column_index, i.status, q.verdict, q.answer, q.truncated, q.output_tokens, i.seconds, "
            "i.error, i.query_id FROM batch_items i JOIN batch_images m ON m.batch_id = i.batch_id AND "
            "m.position = i.image_position LEFT JOIN queries q ON q.id = i.query_id WHERE i.batch_id = ? "
            "ORDER BY i.image_position, i.column_index", (batch_id,)).fetchall()
    return tuple(BatchResult(name, columns[j].label, columns[j].template_id, BatchItemStatus(status), verdict or "",
                             answer or "", bool(truncated), tokens or 0, round(seconds, 3), error, query_id)
                 for name, j, status, verdict, answer, truncated, tokens, seconds, error, query_id in rows)
