"""Query history in SQLite: every question asked, answered or failed, with what is needed to re-run it."""
from core.history.entry import HistoryEntry, HistoryListing, StoredImage
from core.history.queries import HistoryFilter, HistoryOptions
from core.history.stamp import ReproStamp, differences, make_stamp
from core.history.store import HistoryStore

__all__ = [
    "HistoryEntry", "HistoryFilter", "HistoryListing", "HistoryOptions", "HistoryStore", "ReproStamp",
    "StoredImage", "differences", "make_stamp",
]
