"""The history database and its entries: open it (applying every migration once, here), record queries and
images, read one entry back. The other table groups have their own modules (compare_groups, batches, reviews;
queries for the History page's listings), each taking a HistoryStore.

Decisions: SQLite in WAL mode with synchronous=NORMAL, one short-lived connection per call (sqlite3
connections must not cross threads, and every browser session runs in its own thread), every value
bound as a parameter. Each query is one transaction, written after its answer or error, so a process
killed mid-query loses only that query; WAL keeps every committed row across the kill. Every distinct
image is stored once (keyed by the SHA-256 of its bytes) with a small JPEG thumbnail.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from core.history import migrations
from core.history.entry import HistoryEntry, StoredImage
from core.messages import Message
from core.records import PreparedImage
from core.statuses import EntryStatus

THUMBNAIL_PX = 320
JSON_COLUMNS = ("image_hashes", "image_notes", "timings", "peak_memory_gb", "verdict_detail", "stamp")


def now_utc() -> str:
    """The time history stamps rows with: ISO-8601 UTC to the millisecond, which sorts as text."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def thumbnail(image: Image.Image) -> bytes:
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


class HistoryStore:
    """One history database file; cheap to construct after the first open (migrations already applied)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            migrations.apply(db)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed afterwards."""
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- write -----------------------------------------------------------------------------------
    def record(self, entry: HistoryEntry, images: tuple[tuple[bytes, PreparedImage], ...] = ()) -> HistoryEntry:
        """Write one query (and any image not stored yet) in one transaction; returns it with id and time."""
        with self.transaction() as db:
            return insert_entry(db, entry, images)

    # -- read ------------------------------------------------------------------------------------
    def get(self, entry_id: int) -> HistoryEntry | None:
        with self.connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM queries WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else entry_from_row(row)

    def image(self, sha256: str) -> StoredImage | None:
        with self.connect() as db:
            row = db.execute(
                "SELECT sha256, data, thumbnail, width, height FROM images WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else StoredImage(*row)

    def count(self) -> int:
        with self.connect() as db:
            return db.execute("SELECT count(*) FROM queries").fetchone()[0]


def entry_from_row(row: sqlite3.Row) -> HistoryEntry:
    """A `queries` row (all its columns, by name) as the entry it records."""
    data = dict(row)
    for column in JSON_COLUMNS:
        data[column] = json.loads(data[column])
    return HistoryEntry(
        id=data["id"], created_at=data["created_at"], session_id=data["session_id"], page=data["page"],
        template_id=data["template_id"], template_hash=data["template_hash"], question=data["question"],
        image_hashes=tuple(data["image_hashes"]), image_notes=tuple(data["image_notes"]),
        status=EntryStatus(data["status"]), answer=data["answer"], truncated=bool(data["truncated"]),
        input_tokens=data["input_tokens"], output_tokens=data["output_tokens"], tokens_per_s=data["tokens_per_s"],
        timings=data["timings"],
        peak_memory_gb=data["peak_memory_gb"], error=data["error"], error_type=data["error_type"],
        verdict=data["verdict"], verdict_detail=data["verdict_detail"], stamp=data["stamp"], rerun_of=data["rerun_of"],
        conversation_id=data["conversation_id"], **_messages(json.loads(data["message_ids"])),
    )


def _messages(column: dict[str, Any]) -> dict[str, Any]:
    """An entry's error_message and image_note_messages from its `message_ids` column ({} on older rows)."""
    error = column.get("error")
    return {"error_message": Message.from_json(error) if error else None,
            "image_note_messages": tuple(Message.from_json(note) for note in column.get("image_notes", ()))}


def _columns(entry: HistoryEntry) -> dict[str, Any]:
    values: dict[str, Any] = {
        "created_at": entry.created_at, "session_id": entry.session_id, "page": entry.page,
        "template_id": entry.template_id, "template_hash": entry.template_hash, "question": entry.question,
        "image_sha256": entry.image_hashes[0] if entry.image_hashes else "", "status": entry.status,
        "answer": entry.answer, "truncated": int(entry.truncated), "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens, "tokens_per_s": entry.tokens_per_s,
        "total_s": float(entry.timings.get("total", 0.0)), "queue_s": entry.timings.get("queue"),  # None: unmeasured
        "error": entry.error, "error_type": entry.error_type,
        "verdict": entry.verdict, "rerun_of": entry.rerun_of, "conversation_id": entry.conversation_id,
        "message_ids": json.dumps(entry.message_ids_json(), ensure_ascii=False),
    }
    for column in JSON_COLUMNS:
        value = getattr(entry, column)
        values[column] = json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)
    return values


def insert_entry(db: sqlite3.Connection, entry: HistoryEntry,
                 images: tuple[tuple[bytes, PreparedImage], ...] = ()) -> HistoryEntry:
    """Write one entry (and any image not stored yet) inside the caller's transaction; returns it with its id.
    For rows that must land together with the entry (a compare cell, a batch item's status)."""
    try:
        status = EntryStatus(entry.status)
    except ValueError:
        raise ValueError(f"unknown history status {entry.status!r}") from None
    entry = replace(entry, status=status, created_at=entry.created_at or now_utc())
    values = _columns(entry)
    for data, prepared in images:
        db.execute(
            "INSERT OR IGNORE INTO images (sha256, data, thumbnail, width, height, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (prepared.sha256, data, thumbnail(prepared.image), prepared.width, prepared.height, entry.created_at),
        )
    cursor = db.execute(f"INSERT INTO queries ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
                        tuple(values.values()))
    return replace(entry, id=cursor.lastrowid)
