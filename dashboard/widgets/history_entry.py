"""One history entry in full: its image, question, answer, metrics, verdict and stamp; and its re-run."""
from __future__ import annotations

import streamlit as st

from core.errors import LoupeError
from core.history import HistoryStore
from core.serving.recorded_ask import ask_and_record, rerun_differences, rerun_request
from dashboard.widgets.answer_panel import show_entry, stream_answer
from dashboard.widgets.core_text import core_text, note_texts
from dashboard.widgets.display_time import analyst_zone_name, display_time
from dashboard.widgets.interface_language import Markup, page_word, t
from dashboard.widgets.model_resource import require_engine


def show_history_entry(store: HistoryStore, entry_id: int, session: str) -> None:
    entry = store.get(entry_id)
    if entry is None:
        st.warning(t("history_entry.gone", id=entry_id))
        return
    with st.container(border=True):
        left, right = st.columns([2, 5], gap="large")
        with left:
            for sha in entry.image_hashes:
                stored = store.image(sha)
                if stored is None:
                    st.caption(t("history_entry.image_not_kept", sha=sha[:12]))
                    continue
                full = st.toggle(t("history_entry.full_size"), key=f"history-full-{entry.id}-{sha[:8]}")
                st.image(stored.data if full else stored.thumbnail,
                         caption=t("history_entry.image_caption", width=stored.width, height=stored.height, sha=sha[:12]))
            for note in note_texts(entry.image_notes, entry.image_note_messages):
                st.caption(note)
        with right:
            template = (t("history_entry.template", template=entry.template_id, hash=entry.template_hash[:10])
                        if entry.template_id else t("history_entry.free_question"))
            rerun = t("history_entry.rerun_of", id=entry.rerun_of) if entry.rerun_of else ""
            # An API request's session is "api:" + its `user` field, which the caller chose: t escapes it.
            st.caption(t("history_entry.heading", id=entry.id, time=f"{display_time(entry.created_at)} ({analyst_zone_name()})",
                         session=entry.session_id, page=page_word(entry.page), template=Markup(template), rerun=Markup(rerun)))
            st.text(entry.question)
            show_entry(entry, with_reference=False, compact=True)
            with st.expander(t("history_entry.stamp")):
                st.json(entry.stamp or {"note": t("history_entry.no_stamp", escape=str)})
            clicked = st.button(t("history_entry.rerun"), key=f"history-rerun-{entry.id}", icon=":material/replay:",
                                help=t("history_entry.rerun_help"))
    if clicked:
        _rerun(store, entry.id, session)


def _rerun(store: HistoryStore, entry_id: int, session: str) -> None:
    st.subheader(t("history_entry.rerun_heading", id=entry_id))
    try:
        request = rerun_request(store, entry_id, session)
    except LoupeError as exc:
        st.error(core_text(exc))
        return
    engine = require_engine()
    rerun = stream_answer(ask_and_record(engine, store, request), st.empty())
    original = store.get(entry_id)
    if rerun is not None and original is not None:
        found = rerun_differences(original, rerun)
        same = found == ["answer: identical"]
        (st.success if same else st.info)(
            t("history_entry.same_answer") if same else t("history_entry.what_differs"), icon=":material/compare:")
        if not same:
            st.code("\n".join(found), language=None)
