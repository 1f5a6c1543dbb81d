"""A page conversation's turns as history keeps them: the rows sharing one conversation_id, oldest first.

A regenerated turn is a new row whose rerun_of names the row it replaces; the conversation shows (and sends
back to the model) only the newest answer of each turn.
"""
from __future__ import annotations

import sqlite3

from core.history.entry import HistoryEntry
from core.history.store import HistoryStore, entry_from_row


def turns(store: HistoryStore, conversation_id: str) -> tuple[HistoryEntry, ...]:
    """The conversation's rows in the order they were asked, without those a regenerate replaced."""
    if not conversation_id:
        return ()
    with store.connect() as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM queries WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
    entries = [entry_from_row(row) for row in rows]
    replaced = {entry.rerun_of for entry in entries if entry.rerun_of is not None}
    return tuple(entry for entry in entries if entry.id not in replaced)
