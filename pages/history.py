"""History: every query asked on this server, filtered and paged in SQL; one entry in full; re-run; export."""
import hashlib
import math
from dataclasses import asdict

import pandas as pd
import streamlit as st

from core.history import HistoryFilter, queries
from core.statuses import EntryStatus
from dashboard.widgets.display_time import analyst_zone_name, display_time
from dashboard.widgets.history_entry import show_history_entry
from dashboard.widgets.interface_language import outcome_word, page_word, t, verdict_word
from dashboard.widgets.model_resource import get_history
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line
from dashboard.widgets.table_downloads import table_downloads

ALL, THIS = "", "this"
OUTCOMES = ("", EntryStatus.ANSWERED, EntryStatus.FAILED, EntryStatus.STOPPED)



def _open_clicked_row(rows: list[int], ids: list[int]) -> None:
    """A row clicked in the table opens below it: its id becomes the list's choice, once per click, so the list
    can still pick another entry while the row stays selected."""
    clicked = ids[rows[0]] if rows and rows[0] < len(ids) else None
    if clicked is not None and st.session_state.get("history-clicked") != clicked:
        st.session_state["history-entry"] = clicked
    st.session_state["history-clicked"] = clicked


st.title(t("history.title"))
store = get_history()
session = session_id()
options = queries.options(store)

with st.container(border=True):
    a, b, c, d = st.columns(4)
    others = [s for s in options.sessions if s != session]
    # The options' words are looked up now, in this run's language: a choice's labels belong to one run.
    session_words = {ALL: t("history.all_sessions"), THIS: t("history.this_session", escape=str, session=session)}
    chosen_session = a.selectbox(t("history.session"), [ALL, THIS, *others], key="history-session",
                                 format_func=lambda s: session_words.get(s, s))
    page_words = {p: page_word(p) for p in options.pages}
    pages = b.multiselect(t("history.pages"), options.pages, key="history-pages", placeholder=t("history.all_pages"),
                          format_func=lambda p: page_words.get(p, p))
    all_templates = t("history.all_templates")
    template_id = c.selectbox(t("history.template"), [ALL, *options.template_ids], key="history-template",
                              format_func=lambda i: i or all_templates)
    outcome_words = {o: outcome_word(o).capitalize() if o else t("history.any_outcome") for o in OUTCOMES}
    outcome = d.selectbox(t("history.outcome"), OUTCOMES, key="history-outcome", format_func=outcome_words.__getitem__)
    e, f = st.columns([1, 3])
    dates = e.date_input(t("history.dates", zone=analyst_zone_name()), value=[], key="history-dates", format="YYYY-MM-DD")
    text = f.text_input(t("history.text"), key="history-text")

date_from = dates[0] if len(dates) > 0 else None
date_to = dates[1] if len(dates) > 1 else date_from
flt = HistoryFilter(
    session_id=session if chosen_session == THIS else chosen_session, pages=tuple(pages), template_id=template_id,
    status=outcome, date_from=date_from, date_to=date_to, text=text,
    time_zone=analyst_zone_name(),  # the days picked are the analyst's, not UTC's
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
zone = analyst_zone_name()
st.caption(t("history.summary_one" if listing.total == 1 else "history.summary_many", total=listing.total, more=more,
             page=page_no, pages=pages_total, zone=zone))
if listing.rows:
    frame = pd.DataFrame([asdict(row) for row in listing.rows])
    frame["created_at"] = frame["created_at"].map(display_time)
    frame["status"] = frame["status"].map(outcome_word)
    frame["page"] = frame["page"].map(page_word)
    frame["verdict"] = frame["verdict"].map(lambda v: verdict_word(v) if v else v)
    table = st.dataframe(
        frame, hide_index=True, width="stretch", key="history-table", on_select="rerun",
        selection_mode="single-row",
        column_order=["id", "created_at", "page", "template_id", "status", "verdict", "question", "answer",
                      "output_tokens", "tokens_per_s", "queue_s", "total_s", "error", "session_id"],
        column_config={
            "id": st.column_config.NumberColumn("#", format="%d", width="small"),
            "created_at": t("history.column_time", escape=str, zone=zone),  # a header is plain text
            "page": t("history.column_page"),
            "template_id": t("history.column_template"), "status": t("history.column_outcome"),
            "verdict": t("history.column_verdict"), "question": t("history.column_question"),
            "answer": t("history.column_answer"), "error": t("history.column_error"),
            "output_tokens": st.column_config.NumberColumn(t("history.column_tokens"), format="%d"),
            "tokens_per_s": st.column_config.NumberColumn(t("history.column_tokens_per_s"), format="%.1f"),
            "queue_s": st.column_config.NumberColumn(t("history.column_queue_s"), format="%.2f",
                                                     help=t("history.column_queue_help")),
            "total_s": st.column_config.NumberColumn(t("history.column_total_s"), format="%.2f",
                                                     help=t("history.column_total_help")),
            "session_id": t("history.column_session"),
        },
    )
    st.pagination(pages_total, key=page_key, max_visible_pages=7)
    left, middle, right, _ = st.columns([1, 1, 1, 3])
    table_downloads(left, middle, lambda: queries.export_table(store, flt), file_stem="loupe-history", key="history",
                    help=t("history.export_help", limit=queries.EXPORT_LIMIT), label=t("history.export"))
    right.download_button(t("history.export_json"), data=lambda: queries.export_json(store, flt), file_name="loupe-history.json",
                          mime="application/json", icon=":material/download:", key="history-json",
                          help=t("history.export_help", limit=queries.EXPORT_LIMIT))
    ids = [row.id for row in listing.rows]
    _open_clicked_row(table.selection.rows, ids)
    labels = {row.id: f"#{row.id} · {display_time(row.created_at)} · {row.question[:60]}" for row in listing.rows}
    chosen = st.selectbox(t("history.open_entry"), ids, format_func=labels.__getitem__, key="history-entry")
    show_history_entry(store, chosen, session)
else:
    st.info(t("history.nothing_matches"), icon=":material/history:")
show_status_line()
