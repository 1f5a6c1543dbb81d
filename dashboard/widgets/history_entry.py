"""One history entry in full: its image, question, answer, metrics, verdict and stamp; and its re-run."""
from __future__ import annotations

import streamlit as st

from core.errors import LoupeError
from core.history import HistoryStore
from core.serving.recorded_ask import ask_and_record, rerun_differences, rerun_request
from dashboard.widgets.answer_panel import show_entry, stream_answer
from dashboard.widgets.model_resource import require_engine
from dashboard.widgets.outside_text import markdown_text


def show_history_entry(store: HistoryStore, entry_id: int, session: str) -> None:
    entry = store.get(entry_id)
    if entry is None:
        st.warning(f"Entry #{entry_id} no longer exists.")
        return
    with st.container(border=True):
        left, right = st.columns([2, 5], gap="large")
        with left:
            for sha in entry.image_hashes:
                stored = store.image(sha)
                if stored is None:
                    st.caption(f"Image {sha[:12]} was not kept (it could not be read).")
                    continue
                full = st.toggle("Full-size image", key=f"history-full-{entry.id}-{sha[:8]}")
                st.image(stored.data if full else stored.thumbnail,
                         caption=f"prepared {stored.width}×{stored.height} · sha256 {sha[:12]}")
            for note in entry.image_notes:
                st.caption(markdown_text(note))
        with right:
            template = (f"{markdown_text(entry.template_id)} (text {entry.template_hash[:10]})" if entry.template_id
                        else "free question")
            rerun = f" · re-run of #{entry.rerun_of}" if entry.rerun_of else ""
            # An API request's session is "api:" + its `user` field, which the caller chose.
            st.caption(f"#{entry.id} · {entry.created_at[:19].replace('T', ' ')} UTC · "
                       f"session {markdown_text(entry.session_id)} · page {markdown_text(entry.page)} · {template}{rerun}")
            st.text(entry.question)
            show_entry(entry, with_reference=False, compact=True)
            with st.expander("Reproducibility stamp"):
                st.json(entry.stamp or {"note": "none recorded (the question failed before the model was asked)"})
            clicked = st.button("Re-run", key=f"history-rerun-{entry.id}", icon=":material/replay:",
                                help="Ask the same question about the same image with the same generation settings, "
                                     "on the model loaded now, and say what differs.")
    if clicked:
        _rerun(store, entry.id, session)


def _rerun(store: HistoryStore, entry_id: int, session: str) -> None:
    st.subheader(f"Re-run of #{entry_id}")
    try:
        request = rerun_request(store, entry_id, session)
    except LoupeError as exc:
        st.error(markdown_text(exc))
        return
    engine = require_engine()
    rerun = stream_answer(ask_and_record(engine, store, request), st.empty())
    original = store.get(entry_id)
    if rerun is not None and original is not None:
        found = rerun_differences(original, rerun)
        same = found == ["answer: identical"]
        (st.success if same else st.info)(
            "Same conditions, same answer." if same else "What differs from the original:", icon=":material/compare:")
        if not same:
            st.code("\n".join(found), language=None)
