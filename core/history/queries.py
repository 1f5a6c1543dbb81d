"""What the History page asks of the database: filtered, paged listings, filter options, exports.

Filtering and paging happen in SQL (newest first, by id) on indexed columns, so a listing costs the
same with 1,000 rows or 100,000. Text search is a LIKE over the question and the answer (Chinese has no
word boundaries for a tokenizer to use); its count stops at `count_cap` matches. Dates are the analyst's
days (the filter's `time_zone`; local_days.py turns them into UTC bounds).
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.history.entry import HistoryListing, HistoryRow
from core.history.local_days import UTC_ZONE, utc_bounds
from core.history.store import JSON_COLUMNS, HistoryStore
from core.statuses import EntryStatus
from core.table_export import ExportTable, csv_text

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000  # newest matching rows an export holds
LIST_COLUMNS = (
    "id, created_at, session_id, page, template_id, status, verdict, substr(question, 1, 120) AS question, "
    "substr(answer, 1, 160) AS answer, truncated, output_tokens, tokens_per_s, total_s, "
    "substr(error, 1, 160) AS error, rerun_of, queue_s"
)
EXPORT_COLUMNS = (
    "id", "created_at", "session_id", "page", "template_id", "template_hash", "question", "image_sha256",
    "image_hashes", "image_notes", "status", "answer", "truncated", "input_tokens", "output_tokens",
    "tokens_per_s", "total_s", "queue_s", "timings", "peak_memory_gb", "error", "error_type", "verdict", "verdict_detail",
    "stamp", "rerun_of",
)


@dataclass(frozen=True)
class HistoryFilter:
    """The History page's filters; an empty field does not filter. `date_to` is inclusive; the dates are days in
    `time_zone` (an IANA name: the analyst's)."""

    session_id: str = ""
    pages: tuple[str, ...] = ()
    template_id: str = ""
    status: str = ""
    verdict: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    text: str = ""
    time_zone: str = UTC_ZONE


@dataclass(frozen=True)
class HistoryOptions:
    """The values the filters can offer: pages and templates seen, the most recent sessions."""

    pages: tuple[str, ...]
    template_ids: tuple[str, ...]
    sessions: tuple[str, ...]


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def add_day_range(parts: list[str], params: list[object], column: str, first: dt.date | None,
                  last: dt.date | None, zone: str) -> None:
    """Conditions for `column` (an ISO UTC timestamp) falling on the days first..last of `zone`, both inclusive."""
    start, end = utc_bounds(first, last, zone)
    if start:
        parts.append(f"{column} >= ?")
        params.append(start)
    if end:
        parts.append(f"{column} < ?")
        params.append(end)


def where_clause(f: HistoryFilter) -> tuple[str, list[object]]:
    """The WHERE clause (with its parameters) for a filter; '' when nothing filters."""
    parts: list[str] = []
    params: list[object] = []
    for column, value in (("session_id", f.session_id), ("template_id", f.template_id),
                          ("status", f.status), ("verdict", f.verdict)):
        if value:
            parts.append(f"{column} = ?")
            params.append(value)
    if f.pages:
        parts.append(f"page IN ({', '.join('?' for _ in f.pages)})")
        params.extend(f.pages)
    add_day_range(parts, params, "created_at", f.date_from, f.date_to, f.time_zone)
    if f.text.strip():
        parts.append("(question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
        params.extend([_like(f.text.strip())] * 2)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def listing(store: HistoryStore, f: HistoryFilter, *, page: int = 1, page_size: int = PAGE_SIZE,
            count_cap: int = 100_000) -> HistoryListing:
    """One page (1-based) of matching rows, newest first, and the number of matches (capped)."""
    where, params = where_clause(f)
    offset = max(page - 1, 0) * page_size
    with store.connect() as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            f"SELECT {LIST_COLUMNS} FROM queries{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, page_size, offset],
        ).fetchall()
        if where:
            total = db.execute(f"SELECT count(*) FROM (SELECT 1 FROM queries{where} LIMIT ?)",
                               [*params, count_cap + 1]).fetchone()[0]
        else:
            total = db.execute("SELECT count(*) FROM queries").fetchone()[0]
    capped = total > count_cap
    found = tuple(HistoryRow(**{**dict(r), "status": EntryStatus(r["status"]), "truncated": bool(r["truncated"])})
                  for r in rows)
    return HistoryListing(rows=found, total=min(total, count_cap), total_is_capped=capped)


def options(store: HistoryStore, *, sessions: int = 50) -> HistoryOptions:
    with store.connect() as db:
        pages = [r[0] for r in db.execute("SELECT DISTINCT page FROM queries ORDER BY page")]
        templates = [r[0] for r in db.execute(
            "SELECT DISTINCT template_id FROM queries WHERE template_id != '' ORDER BY template_id")]
        recent = [r[0] for r in db.execute(
            "SELECT session_id FROM queries GROUP BY session_id ORDER BY max(id) DESC LIMIT ?", (sessions,))]
    return HistoryOptions(tuple(pages), tuple(templates), tuple(recent))


def export_rows(store: HistoryStore, f: HistoryFilter, *, limit: int = EXPORT_LIMIT) -> Iterator[dict[str, Any]]:
    """Every matching row (the newest `limit`), all columns but the images, JSON columns decoded."""
    where, params = where_clause(f)
    with store.connect() as db:
        db.row_factory = sqlite3.Row
        cursor = db.execute(
            f"SELECT {', '.join(EXPORT_COLUMNS)} FROM queries{where} ORDER BY id DESC LIMIT ?", [*params, limit])
        for row in cursor:
            data = dict(row)
            for column in JSON_COLUMNS:
                data[column] = json.loads(data[column])
            yield data


def export_table(store: HistoryStore, f: HistoryFilter) -> ExportTable:
    """The History export (CSV and XLSX: core/table_export.py): one row per query, nested values as JSON text."""
    return ExportTable.from_dicts("loupe-history", EXPORT_COLUMNS, export_rows(store, f))


def export_csv(store: HistoryStore, f: HistoryFilter) -> str:
    """The export as CSV text (no BOM: for code that reads it back; the page's download is csv_bytes)."""
    return csv_text(export_table(store, f))


def export_json(store: HistoryStore, f: HistoryFilter) -> str:
    return json.dumps(list(export_rows(store, f)), ensure_ascii=False, indent=1)
