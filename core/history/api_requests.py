"""API requests in history: a scheduler listener that writes one row for every request of an `api:` session.

Dashboard questions are recorded by core/serving/recorded_ask.py, which knows the page and template; the API's
only pass through the scheduler, so they are recorded from its FinishedRequest (page "api"). A request
that failed (out of memory, refused by admission) is kept with its error, like any other query.
"""
from __future__ import annotations

from typing import Any

from core.history.entry import HistoryEntry
from core.history.stamp import make_stamp
from core.history.store import HistoryStore
from core.records import FinishedRequest

_STATUS = {"done": "answered", "failed": "failed", "refused": "failed", "cancelled": "stopped"}


def entry_for(finished: FinishedRequest, stamp: dict[str, Any]) -> HistoryEntry:
    answer, query = finished.answer, finished.query
    t = answer.timings if answer else None
    return HistoryEntry(
        session_id=finished.session, page="api", question=query.question, status=_STATUS[finished.status],
        image_hashes=tuple(p.sha256 for p in query.images), image_notes=tuple(n for p in query.images for n in p.notes),
        answer=answer.text if answer else "", truncated=bool(answer and answer.truncated),
        input_tokens=answer.input_tokens if answer else 0, output_tokens=answer.output_tokens if answer else 0,
        tokens_per_s=answer.tokens_per_s if answer else 0.0,
        timings={"preprocess": t.preprocess, "vision": t.vision, "prefill": t.prefill, "decode": t.decode,
                 "total": t.total} if t else {},
        peak_memory_gb=dict(answer.peak_memory_gb) if answer else {},
        error=finished.error, error_type=finished.error_type, stamp=stamp,
    )


def record_api_requests(scheduler: Any, engine: Any, store: HistoryStore) -> None:
    """From now on, every finished `api:` request of this scheduler gets its history row."""
    card = engine.describe()

    def listener(finished: FinishedRequest) -> None:
        if not finished.session.startswith("api:"):
            return
        stamp = make_stamp(card, finished.query.settings, max_width=engine.settings.max_width).to_json()
        store.record(entry_for(finished, stamp))

    scheduler.add_listener(listener)
