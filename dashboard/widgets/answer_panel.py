"""Streams an answer into the page and shows its timings, tokens and memory underneath."""
from __future__ import annotations

import streamlit as st

from core.records import Answer
from core.streaming import AnswerStream


def show_stream(stream: AnswerStream) -> Answer:
    """Stream text as it comes (always as plain text, never HTML), then the final trimmed answer."""
    placeholder = st.empty()
    shown = ""
    for piece in stream:
        shown += piece
        placeholder.text(shown)
    answer = stream.answer
    assert answer is not None
    placeholder.text(answer.text)
    show_metrics(answer)
    return answer


def show_metrics(answer: Answer) -> None:
    t = answer.timings
    if answer.truncated:
        st.caption(f"Cut at {answer.settings.max_new_tokens} new tokens, trimmed to the last sentence end.")
    cols = st.columns(6)
    for col, (label, value) in zip(cols, [
        ("preprocess", t.preprocess), ("vision", t.vision), ("prefill", t.prefill),
        ("decode", t.decode), ("total", t.total),
    ]):
        col.metric(label, f"{value:.3f} s")
    cols[5].metric("tokens/s", f"{answer.tokens_per_s:.1f}")
    memory = " · ".join(f"{device} {gb:.2f} GB" for device, gb in answer.peak_memory_gb.items())
    st.caption(f"{answer.input_tokens} tokens in, {answer.output_tokens} out · peak memory: {memory}")
