"""History rows open on click (issue #17 item 9): the table's selected row is the entry shown below it."""
from __future__ import annotations

from pathlib import Path

from core.history import HistoryEntry, HistoryStore
from tests.app_pages import assert_no_exception, open_page


def _entry_captions(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("#")]


def test_clicking_a_history_row_opens_that_entry(loupe_home: Path) -> None:
    store = HistoryStore(loupe_home / "history.sqlite3")
    for question in ("first question", "second question", "third question"):
        store.record(HistoryEntry(session_id="abcdefabcdef", page="documents", question=question, status="answered",
                                  answer=f"answer to the {question}"))
    at = open_page("history")
    assert list(at.dataframe[0].value["id"]) == [3, 2, 1]
    assert at.selectbox(key="history-entry").value == 3
    # The analyst clicks the third row (the oldest entry): the table reports its selection, the entry opens.
    at.session_state["history-table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert_no_exception(at)
    assert at.selectbox(key="history-entry").value == 1
    assert any(c.startswith("#1 ·") for c in _entry_captions(at))
    assert any(t.value == "first question" for t in at.text)
    # Choosing another entry in the list still works while the row stays selected.
    at.selectbox(key="history-entry").set_value(2).run()
    assert_no_exception(at)
    assert any(c.startswith("#2 ·") for c in _entry_captions(at))
