"""The sidebar card: which model answers, on what, in which numerics, split how across the GPUs."""
from __future__ import annotations

import streamlit as st

from core.models.demo_model import DEMO_LABEL
from core.records import ModelCard
from dashboard.widgets.outside_text import markdown_text


def _code(value: str) -> str:
    # A model's name may come from a remote server: no backtick to close the code span, and no line break to
    # end the paragraph (the code span would be left unclosed and what follows rendered as Markdown).
    return f"`{' '.join(value.replace('`', '').split())}`" if value.strip() else "—"


def show_model_card(card: ModelCard) -> None:
    with st.sidebar.container(border=True):
        st.markdown(f"**Model** {_code(card.name)}")
        st.caption(
            f"Backend {_code(card.backend)} · dtype {_code(card.dtype)}  \n"
            f"Attention {_code(card.attn_implementation)} · device {_code(card.device)}"
        )
        st.caption(f"Shard plan: {_code(card.device_map_summary or card.device)}")
        for note in card.notes:
            st.caption(markdown_text(note))
        if card.is_demo:
            st.warning(DEMO_LABEL, icon=":material/warning:")
