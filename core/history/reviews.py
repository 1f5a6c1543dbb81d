"""Review's rows: the analysts' word on moderation results (table `reviews`, one per history entry), read
together with the entry they judge. Dates filter on the day the model answered, in the analyst's time zone,
as the History page does.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.history.entry import HistoryEntry
from core.history.local_days import UTC_ZONE
from core.history.queries import add_day_range
from core.history.store import HistoryStore, entry_from_row


@dataclass(frozen=True)
class ReviewFilter:
    """The queue's filters; an empty field does not filter. `reviewed`: None = both; `date_to` is inclusive."""

    verdicts: tuple[str, ...] = ()
    reviewed: bool | None = None
    template_id: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    time_zone: str = UTC_ZONE  # the dates are days in this zone (an IANA name: the analyst's)


@dataclass(frozen=True)
class Review:
    """An analyst's word on one result: agreed, or overridden with a label, a reason and a note."""

    query_id: int
    model_verdict: str
    label: str
    agreed: bool
    reason: str
    note: str
    reviewer: str
    reviewed_at: str


@dataclass(frozen=True)
class ReviewedResult:
    """A moderation result: its history entry (verdict, verdict_detail, answer) and the review of it, if any."""

    entry: HistoryEntry
    review: Review | None


def _where(f: ReviewFilter) -> tuple[str, list[object]]:
    parts: list[str] = ["q.verdict != ''"]
    params: list[object] = []
    if f.verdicts:
        parts.append(f"q.verdict IN ({', '.join('?' for _ in f.verdicts)})")
        params.extend(f.verdicts)
    if f.reviewed is not None:
        parts.append("r.query_id IS NOT NULL" if f.reviewed else "r.query_id IS NULL")
    if f.template_id:
        parts.append("q.template_id = ?")
        params.append(f.template_id)
    add_day_range(parts, params, "q.created_at", f.date_from, f.date_to, f.time_zone)
    return " WHERE " + " AND ".join(parts), params


_FROM = " FROM queries q LEFT JOIN reviews r ON r.query_id = q.id"
_SELECT = ("SELECT q.*, r.model_verdict, r.label, r.agreed, r.reason, r.note, r.reviewer, r.reviewed_at"
           + _FROM)


def _result(row: sqlite3.Row) -> ReviewedResult:
    review = None if row["label"] is None else Review(
        row["id"], row["model_verdict"], row["label"], bool(row["agreed"]), row["reason"], row["note"],
        row["reviewer"], row["reviewed_at"])
    return ReviewedResult(entry_from_row(row), review)


def _rows(store: HistoryStore, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
    with store.connect() as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()


def results(store: HistoryStore, f: ReviewFilter, *, page: int, page_size: int) -> tuple[tuple[ReviewedResult, ...], int]:
    """One page (1-based) of matching results, oldest first, and how many match in all."""
    where, params = _where(f)
    rows = _rows(store, f"{_SELECT}{where} ORDER BY q.id LIMIT ? OFFSET ?",
                 [*params, page_size, max(page - 1, 0) * page_size])
    total = _rows(store, f"SELECT count(*){_FROM}{where}", params)[0][0]
    return tuple(_result(r) for r in rows), total


def reviewed(store: HistoryStore, f: ReviewFilter) -> tuple[ReviewedResult, ...]:
    """Every reviewed result matching the filter (whatever its `reviewed`), oldest first."""
    where, params = _where(replace(f, reviewed=True))
    return tuple(_result(r) for r in _rows(store, f"{_SELECT}{where} ORDER BY q.id", params))


def result(store: HistoryStore, query_id: int) -> ReviewedResult | None:
    """The moderation result of one entry; None when it does not exist or has no verdict."""
    rows = _rows(store, f"{_SELECT} WHERE q.id = ? AND q.verdict != ''", [query_id])
    return _result(rows[0]) if rows else None


def template_ids(store: HistoryStore) -> list[str]:
    """Templates that have moderation results."""
    return [r[0] for r in _rows(store, "SELECT DISTINCT template_id FROM queries WHERE verdict != '' "
                                       "ORDER BY template_id", [])]


def save(store: HistoryStore, review: Review) -> None:
    """Write a review, replacing any earlier one of the same result (the latest word counts)."""
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO reviews (query_id, model_verdict, label, agreed, reason, note, reviewer, "
                   "reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (review.query_id, review.model_verdict, review.label, int(review.agreed), review.reason,
                    review.note, review.reviewer, review.reviewed_at))


def clear(store: HistoryStore, query_id: int) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM reviews WHERE query_id = ?", (query_id,))
