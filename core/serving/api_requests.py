"""API requests in history: a scheduler listener that writes one row for every request of an `api:` session.

Dashboard questions are recorded by core/serving/recorded_ask.py, which knows the page and template; the API's
only pass through the scheduler, so they are recorded from its FinishedRequest (page "api"). A request
that failed (out of memory, refused by admission) is kept with its error, like any other query.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.history import HistoryEntry, HistoryStore, make_stamp
from core.records import FinishedRequest
from core.statuses import EntryStatus, RequestStatus

if TYPE_CHECKING:  # the scheduler module imports the engine's; typing only, no import cycle at run time
    from core.serving.engine import Engine
    from core.serving.scheduler import Scheduler

_STATUS = {RequestStatus.DONE: EntryStatus.ANSWERED, RequestStatus.FAILED: EntryStatus.FAILED,
           RequestStatus.REFUSED: EntryStatus.FAILED, RequestStatus.CANCELLED: EntryStatus.STOPPED}


def entry_for(finished: FinishedRequest, stamp: dict[str, Any]) -> HistoryEntry:
    query = finished.query
    return HistoryEntry.from_answer(
        finished.answer, session_id=finished.session, page="api", question=query.question,
        status=_STATUS[RequestStatus(finished.status)], error=finished.error, error_type=finished.error_type,
        image_hashes=tuple(p.sha256 for p in query.images), image_notes=tuple(n for p in query.images for n in p.notes),
        stamp=stamp,
    )


def record_api_requests(scheduler: Scheduler, engine: Engine, store: HistoryStore) -> None:
    """From now on, every finished `api:` request of this scheduler gets its history row."""
    card = engine.describe()

    def listener(finished: FinishedRequest) -> None:
        if not finished.session.startswith("api:"):
            return
        stamp = make_stamp(card, finished.query.settings, max_width=engine.settings.max_width).to_json()
        store.record(entry_for(finished, stamp))

    scheduler.add_listener(listener)
