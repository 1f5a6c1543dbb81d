"""A moderation verdict: the overall status, one row per checklist item, and the model's raw words."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analysis.moderation import LABELS, Verdict

_BOXES = {"pass": st.success, "needs_review": st.warning, "reject": st.error}
_ICONS = {"pass": ":material/check_circle:", "needs_review": ":material/help:", "reject": ":material/block:",
          "unparsed": ":material/help:"}


def show_verdict(verdict: Verdict) -> None:
    box = _BOXES.get(verdict.status, st.warning)
    box(f"Verdict: {verdict.label}", icon=_ICONS.get(verdict.status))
    for note in verdict.notes:
        st.caption(note)
    if verdict.items:  # a static table: four rows, reasons wrap instead of being cut
        st.table(pd.DataFrame([{"item": i.label or i.item, "result": LABELS.get(i.result, i.result),
                                "reason": i.reason} for i in verdict.items]).set_index("item"))
