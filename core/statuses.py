"""Loupe's status vocabularies, one enum each.

StrEnum, so the values stored in SQLite and sent as JSON stay the strings they always were (a member == its
string, json.dumps writes its value). Imports nothing from Loupe: every layer may use them.
"""
from enum import StrEnum


class EntryStatus(StrEnum):
    """A history entry's outcome."""

    ANSWERED = "answered"
    FAILED = "failed"
    STOPPED = "stopped"  # the reader went away before the end; the partial text is kept


class RequestStatus(StrEnum):
    """Where a request is in the scheduler: queued, running, then how it finished (a FinishedRequest carries
    one of the last four)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"


class TraceOutcome(StrEnum):
    """A query's state on the memory chart's timeline."""

    RUNNING = "running"
    ANSWERED = "answered"
    CANCELLED = "cancelled"
    FAILED = "failed"


class VerdictStatus(StrEnum):
    """A moderation verdict, overall or for one checklist item."""

    PASS = "pass"
    NEEDS_REVIEW = "needs_review"
    REJECT = "reject"
    UNPARSED = "unparsed"


class BatchStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"


class BatchItemStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
