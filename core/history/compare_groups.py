"""Compare's rows: one group per comparison (its spec: columns, images, generation, model) and one cell per
answer, linking the group to the cell's history entry. Tables `compare_groups` and `compare_cells`.

A cell's entry and its link are written in one transaction, so a group never points at a missing row
and no answered cell is left out of its group.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from core.errors import HistoryError
from core.history.entry import HistoryEntry
from core.history.store import HistoryStore, entry_from_row, insert_entry, now_utc
from core.records import PreparedImage


@dataclass(frozen=True)
class CompareGroupSummary:
    """One saved comparison in the list: when, on which model, image names, column labels, what it re-ran."""

    id: int
    images: tuple[str, ...]  # their names, in row order
    columns: tuple[str, ...]  # their labels
    created_at: str
    model: str
    rerun_of: int | None


@dataclass(frozen=True)
class StoredCompareGroup:
    """A saved comparison's spec (JSON as Compare wrote it) and the group it re-ran."""

    id: int
    spec: dict[str, Any]
    rerun_of: int | None


@dataclass(frozen=True)
class StoredCompareCell:
    """One answered (or failed) cell of a saved comparison, with its history entry."""

    image_index: int
    column_index: int
    entry: HistoryEntry
    batched: bool


def create_group(store: HistoryStore, session_id: str, spec: dict[str, Any], rerun_of: int | None) -> int:
    with store.transaction() as db:
        cursor = db.execute("INSERT INTO compare_groups (created_at, session_id, spec, rerun_of) VALUES (?, ?, ?, ?)",
                            (now_utc(), session_id, json.dumps(spec, ensure_ascii=False), rerun_of))
    return int(cursor.lastrowid or 0)


def record_cell(store: HistoryStore, group_id: int, image_index: int, column_index: int, entry: HistoryEntry,
                images: tuple[tuple[bytes, PreparedImage], ...], *, batched: bool) -> HistoryEntry:
    """Write a cell's history entry and its place in the group together; returns the entry with its id."""
    with store.transaction() as db:
        recorded = insert_entry(db, entry, images)
        db.execute("INSERT INTO compare_cells (group_id, image_index, column_index, query_id, batched) "
                   "VALUES (?, ?, ?, ?, ?)", (group_id, image_index, column_index, recorded.id, int(batched)))
    return recorded


def group(store: HistoryStore, group_id: int) -> StoredCompareGroup:
    with store.connect() as db:
        row = db.execute("SELECT spec, rerun_of FROM compare_groups WHERE id = ?", (group_id,)).fetchone()
    if row is None:
        raise HistoryError(f"Comparison #{group_id} does not exist.")
    return StoredCompareGroup(group_id, json.loads(row[0]), row[1])


def cells(store: HistoryStore, group_id: int) -> tuple[StoredCompareCell, ...]:
    """The group's cells, image by image, column by column."""
    with store.connect() as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT c.image_index, c.column_index, c.batched, q.* FROM compare_cells c "
            "JOIN queries q ON q.id = c.query_id WHERE c.group_id = ? ORDER BY c.image_index, c.column_index",
            (group_id,)).fetchall()
    return tuple(StoredCompareCell(r["image_index"], r["column_index"], entry_from_row(r), bool(r["batched"]))
                 for r in rows)


def list_groups(store: HistoryStore, *, limit: int = 50) -> tuple[CompareGroupSummary, ...]:
    """The newest comparisons first."""
    with store.connect() as db:
        rows = db.execute("SELECT id, created_at, spec, rerun_of FROM compare_groups ORDER BY id DESC LIMIT ?",
                          (limit,)).fetchall()
    found = []
    for group_id, created_at, spec_text, rerun_of in rows:
        spec = json.loads(spec_text)
        found.append(CompareGroupSummary(group_id, tuple(i["name"] for i in spec["images"]),
                                         tuple(c["label"] for c in spec["columns"]), created_at,
                                         spec.get("model", ""), rerun_of))
    return tuple(found)
