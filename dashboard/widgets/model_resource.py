"""The loaded model and the history database: one of each per process, shared by every browser session.

The model's lifecycle (load, switch when its settings change, unload the old one first, keep it when the
new one fails) is core/serving/lifecycle.py's ModelSlot; this widget holds the process's slot in
st.cache_resource and draws the load's progress bar and log lines.
"""
from __future__ import annotations

import streamlit as st

from core.backends import LoadProgress
from core.errors import LoupeError
from core.history import HistoryStore
from core.serving.engine import Engine
from core.serving.lifecycle import ModelSlot
from core.settings import load_settings
from dashboard.widgets.interface_language import t


@st.cache_resource(show_spinner=False)
def model_slot() -> ModelSlot:
    return ModelSlot()


def get_engine() -> Engine:
    """The engine for the current settings, loading it (with a progress bar and log lines) if needed."""
    settings = load_settings()
    slot = model_slot()
    if (engine := slot.loaded(settings)) is not None:
        return engine
    if slot.is_loading(settings):
        with st.spinner(t("model_resource.attaching")):
            return slot.get(settings)
    bar = st.progress(0.0, text=t("model_resource.loading"))
    log = st.empty()
    lines: list[str] = []

    def progress(step: LoadProgress) -> None:
        lines.append(step.message)
        bar.progress(min(max(step.fraction, 0.0), 1.0), text=step.message)
        log.code("\n".join(lines[-8:]), language=None)

    try:
        return slot.get(settings, progress)
    finally:
        bar.empty()
        log.empty()


def require_engine() -> Engine:
    """get_engine(), or the reason it cannot load shown as an error, and the page stops there."""
    try:
        return get_engine()
    except LoupeError as exc:
        st.error(t("model_resource.load_failed", reason=exc))  # escaped by t: it may quote a path or a server's reply
        st.stop()
        raise  # unreachable: st.stop() ends the run


@st.cache_resource(show_spinner=False)
def _history(path: str) -> HistoryStore:
    return HistoryStore(path)


def get_history() -> HistoryStore:
    """The history database at Settings.history_path (opened and migrated once per process)."""
    return _history(str(load_settings().history_path))
