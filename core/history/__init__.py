"""Query history in SQLite: every question asked, answered or failed, with what is needed to re-run it.

Owns every SQL statement in Loupe and the one list of migrations, applied once when a HistoryStore opens.
One module per table group: store (the database and its entries: `queries`, `images`), queries (the
History page's listings and exports of entries), conversations (a page conversation's turns),
compare_groups, batches, reviews; local_days (the analyst's days as UTC bounds); entry and stamp hold the
records. Reads return frozen records. May import core.records, core.statuses, core.errors, core.messages,
core.table_export, core.settings and core.inputs.moderation (the Verdict record an entry carries) only.
"""
from core.history import batches, compare_groups, conversations, migrations, queries, reviews
from core.history.entry import HistoryEntry, HistoryListing, HistoryRow, StoredImage
from core.history.queries import HistoryFilter, HistoryOptions
from core.history.stamp import ReproStamp, differences, make_stamp
from core.history.store import HistoryStore, now_utc

__all__ = [
    "HistoryEntry", "HistoryFilter", "HistoryListing", "HistoryRow", "HistoryOptions", "HistoryStore", "ReproStamp",
    "StoredImage", "batches", "compare_groups", "conversations", "differences", "make_stamp", "migrations", "now_utc", "queries",
    "reviews",
]
