"""The sidebar card: which model answers, on what, in which numerics, split how across the GPUs."""
from __future__ import annotations

import streamlit as st

from core.models.demo_model import DEMO_LABEL
from core.records import ModelCard


def _code(value: str) -> str:
    return f"`{value.replace('`', '')}`" if value else "—"


def show_model_card(card: ModelCard) -> None:
    with st.sidebar.container(border=True):
        st.markdown(f"**Model** {_code(card.name)}")
        st.caption(
            f"Backend {_code(card.backend)} · dtype {_code(card.dtype)}  \n"
            f"Attention {_code(card.attn_implementation)} · device {_code(card.device)}"
        )
        st.caption(f"Shard plan: {_code(card.device_map_summary or card.device)}")
        for note in card.notes:
            st.caption(note)
        if card.is_demo:
            st.warning(DEMO_LABEL, icon=":material/warning:")
