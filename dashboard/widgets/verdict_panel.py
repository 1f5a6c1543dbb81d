"""A moderation verdict: the overall status, one row per checklist item, and the model's raw words."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.inputs.moderation import Verdict
from core.statuses import VerdictStatus
from dashboard.widgets.interface_language import t, verdict_word
from dashboard.widgets.outside_text import markdown_text

_BOXES = {VerdictStatus.PASS: st.success, VerdictStatus.NEEDS_REVIEW: st.warning, VerdictStatus.REJECT: st.error}
# Each checklist item's result in its colour (Streamlit's Markdown directive), as the verdict boxes are coloured.
_RESULT_COLOURS: dict[str, str] = {VerdictStatus.PASS: "green", VerdictStatus.NEEDS_REVIEW: "orange", VerdictStatus.REJECT: "red"}
_ICONS = {VerdictStatus.PASS: ":material/check_circle:", VerdictStatus.NEEDS_REVIEW: ":material/help:",
          VerdictStatus.REJECT: ":material/block:", VerdictStatus.UNPARSED: ":material/help:"}


def show_verdict(verdict: Verdict) -> None:
    box = _BOXES.get(verdict.status, st.warning)
    box(t("verdict.heading", verdict=verdict_word(verdict.status)), icon=_ICONS.get(verdict.status))
    for note in verdict.notes:
        st.caption(markdown_text(note))  # names checklist items, which templates define
    if verdict.items:  # a static table: four rows, reasons wrap instead of being cut
        # st.table renders its cells as Markdown, and the reasons are the model's words: escaped, every cell.
        item, result, reason = t("verdict.column_item"), t("verdict.column_result"), t("verdict.column_reason")
        st.table(pd.DataFrame([{item: markdown_text(i.label or i.item), result: _coloured(i.result),
                                reason: markdown_text(i.reason)} for i in verdict.items]).set_index(item))


def _coloured(result: str) -> str:
    """The item's result word in the analyst's language, on its colour; a word Loupe does not know stays plain
    (and escaped)."""
    label = markdown_text(verdict_word(result))
    colour = _RESULT_COLOURS.get(result)
    return f":{colour}-background[{label}]" if colour else label
