"""History: every query asked on this server, filtered and paged in SQL; one entry in full; re-run; export."""
import hashlib
import math
from dataclasses import asdict

import pandas as pd
import streamlit as st

from core.history import HistoryFilter, queries
from core.statuses import EntryStatus
from dashboard.widgets.history_entry import show_history_entry
from dashboard.widgets.model_resource import get_history
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line
from dashboard.widgets.table_downloads import table_downloads

ALL, THIS = "", "this"
OUTCOMES = {"": "Any outcome", EntryStatus.ANSWERED: "Answered", EntryStatus.FAILED: "Failed",
            EntryStatus.STOPPED: "Stopped"}



def _open_clicked_row(rows: list[int], ids: list[int]) -> None:
    """A row clicked in the table opens below it: its id becomes the list's choice, once per click, so the list
    can still pick another entry while the row stays selected."""
    clicked = ids[rows[0]] if rows and rows[0] < len(ids) else None
    if clicked is not None and st.session_state.get("history-clicked") != clicked:
        st.session_state["history-entry"] = clicked
    st.session_state["history-clicked"] = clicked


st.title("History")
store = get_history()
session = session_id()
options = queries.options(store)

with st.container(border=True):
    a, b, c, d = st.columns(4)
    others = [s for s in options.sessions if s != session]
    chosen_session = a.selectbox(
        "Session", [ALL, THIS, *others], key="history-session",
        format_func=lambda s: "All sessions" if s == ALL else f"This session ({session})" if s == THIS else s,
    )
    pages = b.multiselect("Pages", options.pages, key="history-pages", placeholder="All pages")
    template_id = c.selectbox("Template", [ALL, *options.template_ids], key="history-template",
                              format_func=lambda t: t or "All templates")
    outcome = d.selectbox("Outcome", list(OUTCOMES), format_func=OUTCOMES.__getitem__, key="history-outcome")
    e, f = st.columns([1, 3])
    dates = e.date_input("Dates (UTC)", value=[], key="history-dates", format="YYYY-MM-DD")
    text = f.text_input("Text in the question or the answer", key="history-text")

date_from = dates[0] if len(dates) > 0 else None
date_to = dates[1] if len(dates) > 1 else date_from
flt = HistoryFilter(
    session_id=session if chosen_session == THIS else chosen_session, pages=tuple(pages), template_id=template_id,
    status=outcome, date_from=date_from, date_to=date_to, text=text,
)
# The pager's key follows the filters, so new filters start again at page 1.
page_key = "history-page-" + hashlib.sha1(repr(flt).encode()).hexdigest()[:12]
page_no = int(st.session_state.get(page_key, 1))
listing = queries.listing(store, flt, page=page_no)
pages_total = max(1, math.ceil(listing.total / queries.PAGE_SIZE))
if page_no > pages_total:  # fewer matches than when that page was chosen
    del st.session_state[page_key]
    page_no = 1
    listing = queries.listing(store, flt, page=page_no)

more = "+" if listing.total_is_capped else ""
st.caption(f"{listing.total:,}{more} {'query matches' if listing.total == 1 else 'queries match'} · "
           f"page {page_no} of {pages_total:,}{more} · newest first · times in UTC · click a row to open it")
if listing.rows:
    frame = pd.DataFrame([asdict(row) for row in listing.rows])
    frame["created_at"] = frame["created_at"].str.slice(0, 19).str.replace("T", " ")
    table = st.dataframe(
        frame, hide_index=True, width="stretch", key="history-table", on_select="rerun",
        selection_mode="single-row",
        column_order=["id", "created_at", "page", "template_id", "status", "verdict", "question", "answer",
                      "output_tokens", "tokens_per_s", "queue_s", "total_s", "error", "session_id"],
        column_config={
            "id": st.column_config.NumberColumn("#", format="%d", width="small"),
            "created_at": "time (UTC)", "template_id": "template", "status": "outcome",
            "output_tokens": st.column_config.NumberColumn("tokens", format="%d"),
            "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.1f"),
            "queue_s": st.column_config.NumberColumn("queue s", format="%.2f",
                                                     help="Waiting in the model's queue; empty: not measured then"),
            "total_s": st.column_config.NumberColumn("total s", format="%.2f", help="From submit to the last token"),
            "session_id": "session",
        },
    )
    st.pagination(pages_total, key=page_key, max_visible_pages=7)
    left, middle, right, _ = st.columns([1, 1, 1, 3])
    table_downloads(left, middle, lambda: queries.export_table(store, flt), file_stem="loupe-history", key="history",
                    help=f"Every matching row (the newest {queries.EXPORT_LIMIT:,} at most), all columns.")
    right.download_button("Export JSON", data=lambda: queries.export_json(store, flt), file_name="loupe-history.json",
                          mime="application/json", icon=":material/download:", key="history-json",
                          help=f"Every matching row (the newest {queries.EXPORT_LIMIT:,} at most), all columns.")
    ids = [row.id for row in listing.rows]
    _open_clicked_row(table.selection.rows, ids)
    labels = {row.id: f"#{row.id} · {row.created_at[:19].replace('T', ' ')} · {row.question[:60]}"
              for row in listing.rows}
    chosen = st.selectbox("Open an entry", ids, format_func=labels.__getitem__, key="history-entry")
    show_history_entry(store, chosen, session)
else:
    st.info("No query matches these filters yet. Ask one on a scenario page and it appears here.",
            icon=":material/history:")
show_status_line()
