"""The sidebar card: which model answers, on what, in which numerics, split how across the GPUs."""
from __future__ import annotations

import streamlit as st

from core.records import ModelCard
from dashboard.widgets.core_text import note_texts
from dashboard.widgets.interface_language import Markup, t


def _code(value: str) -> Markup:
    # A model's name may come from a remote server: no backtick to close the code span, and no line break to
    # end the paragraph (the code span would be left unclosed and what follows rendered as Markdown).
    return Markup(f"`{' '.join(value.replace('`', '').split())}`" if value.strip() else "—")


def show_model_card(card: ModelCard) -> None:
    with st.sidebar.container(border=True):
        st.markdown(t("model_card.model", name=_code(card.name)))
        st.caption(t("model_card.backend_line", backend=_code(card.backend), dtype=_code(card.dtype),
                     attention=_code(card.attn_implementation), device=_code(card.device)))
        st.caption(t("model_card.shard_plan", plan=_code(card.device_map_summary or card.device)))
        for note in note_texts(card.notes, card.note_messages):  # may quote a server's address: escaped
            st.caption(note)
        if card.is_demo:
            st.warning(t("model_card.demo_warning"), icon=":material/warning:")
