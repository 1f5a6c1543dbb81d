"""A moderation verdict: the overall status, one row per checklist item, and the model's raw words."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.inputs.moderation import LABELS, Verdict
from core.statuses import VerdictStatus

_BOXES = {VerdictStatus.PASS: st.success, VerdictStatus.NEEDS_REVIEW: st.warning, VerdictStatus.REJECT: st.error}
_ICONS = {VerdictStatus.PASS: ":material/check_circle:", VerdictStatus.NEEDS_REVIEW: ":material/help:",
          VerdictStatus.REJECT: ":material/block:", VerdictStatus.UNPARSED: ":material/help:"}


def show_verdict(verdict: Verdict) -> None:
    box = _BOXES.get(verdict.status, st.warning)
    box(f"Verdict: {verdict.label}", icon=_ICONS.get(verdict.status))
    for note in verdict.notes:
        st.caption(note)
    if verdict.items:  # a static table: four rows, reasons wrap instead of being cut
        st.table(pd.DataFrame([{"item": i.label or i.item, "result": LABELS.get(i.result, i.result),
                                "reason": i.reason} for i in verdict.items]).set_index("item"))
