"""A comparison drawn as a matrix: image thumbnails as row headers, each column's model and prompt text as its
header, cells of one height that scroll on their own (so a 2×3 run is one screen, not a 4,500-px page), each
with its tokens, time and truncation; then a word diff between any two cells."""
from __future__ import annotations

import streamlit as st

from core.analysis import word_diff
from core.analysis.compare import CompareCell, CompareRun
from core.history import HistoryStore
from dashboard.widgets.core_text import core_text
from dashboard.widgets.interface_language import t, verdict_word
from dashboard.widgets.outside_text import markdown_text, one_html_block

CELL_PX = 240  # every cell this tall; a longer answer scrolls inside it
HEADER_PX = 96  # the prompt text under each column's title, scrolling when longer
THUMB_SHARE = 1  # the image column's width against 3 per answer column


def column_title(run: CompareRun, j: int) -> str:
    """"model · label": the column's model and its template title (or "Prompt n"); plain text."""
    model = run.model_names[j] if j < len(run.model_names) else ""
    return f"{model} · {run.columns[j].label}" if model else run.columns[j].label


def _figures(cell: CompareCell) -> str:
    """The cell's tokens, time and how it was asked, as Markdown (a caption)."""
    entry = cell.entry
    seconds = entry.timings.get("total", 0.0)
    if entry.error:
        return t("compare.failed_figures", seconds=seconds)
    return (t("compare.token_figures", tokens=entry.output_tokens, seconds=seconds)
            + (t("compare.tok_per_s", rate=entry.tokens_per_s) if entry.tokens_per_s else "")
            + (t("compare.truncated") if entry.truncated else "")
            + t("compare.batched_cell" if cell.batched else "compare.one_at_a_time")
            + (t("compare.verdict", verdict=verdict_word(entry.verdict)) if entry.verdict else ""))


def _thumbnail(store: HistoryStore, run: CompareRun, image_index: int) -> bytes | None:
    for cell in run.cells:
        if cell.image_index == image_index and cell.entry.image_hashes:
            stored = store.image(cell.entry.image_hashes[0])
            if stored is not None:
                return stored.thumbnail
    return None


def show_matrix(store: HistoryStore, run: CompareRun) -> None:
    widths = [THUMB_SHARE] + [3] * len(run.columns)
    head = st.columns(widths, vertical_alignment="bottom")
    head[0].caption(t("compare.image"))
    for j, column in enumerate(run.columns):
        with head[j + 1]:
            st.markdown(f"**{markdown_text(column_title(run, j))}**")  # a model's and a template's names
            with st.container(height=HEADER_PX, border=False, key=f"compare-header-{j}"):
                st.text(column.question)  # the exact prompt, as text
    for i, name in enumerate(run.image_names):
        row = st.columns(widths)
        with row[0]:
            thumb = _thumbnail(store, run, i)
            if thumb is not None:
                st.image(thumb, width="stretch")
            st.markdown(t("compare.image_n", number=i + 1, name=name))  # an uploaded file's name is the uploader's
        for j in range(len(run.columns)):
            cell = run.cell(i, j)
            with row[j + 1]:
                with st.container(height=CELL_PX, border=True, key=f"compare-cell-{i}-{j}"):
                    if cell.entry.error:
                        st.error(core_text(cell.entry.error_message or cell.entry.error))  # may quote a server's reply
                    st.text(cell.entry.answer)
                st.caption(_figures(cell))


def show_diff(run: CompareRun) -> None:
    """Two selectboxes over every "image × column" cell, and the word diff between the two chosen."""
    names = {(c.image_index, c.column_index): t("compare.image_cell", escape=str, number=c.image_index + 1,
                                                name=run.image_names[c.image_index],
                                                column=column_title(run, c.column_index)) for c in run.cells}
    if len(names) < 2:
        return
    st.subheader(t("compare.word_diff"))
    keys = list(names)
    d1, d2 = st.columns(2)
    first = d1.selectbox(t("compare.diff_from"), keys, format_func=names.__getitem__, key="compare-diff-a")
    second = d2.selectbox(t("compare.diff_to"), keys, index=1, format_func=names.__getitem__, key="compare-diff-b")
    a_text, b_text = run.cell(*first).entry.answer, run.cell(*second).entry.answer
    st.caption(t("compare.diff_caption", share=word_diff.similarity(a_text, b_text)))
    st.markdown(one_html_block(word_diff.diff_html(word_diff.word_diff(a_text, b_text))),  # escaped in core
                unsafe_allow_html=True)
