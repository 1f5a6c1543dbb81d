"""Query history in SQLite: every question asked, answered or failed, with what is needed to re-run it.

Owns every SQL statement in Loupe (entries, compare groups, batches, reviews) and the migrations. May import
core.records, core.errors and core.settings only.
"""
from core.history.entry import HistoryEntry, HistoryListing, StoredImage
from core.history.queries import HistoryFilter, HistoryOptions
from core.history.stamp import ReproStamp, differences, make_stamp
from core.history.store import HistoryStore

__all__ = [
    "HistoryEntry", "HistoryFilter", "HistoryListing", "HistoryOptions", "HistoryStore", "ReproStamp",
    "StoredImage", "differences", "make_stamp",
]
