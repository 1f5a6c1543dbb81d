"""The loaded model and the history database: one of each per process, shared by every browser session.

The model lives in a ModelSlot held by st.cache_resource. The slot is keyed on the settings that choose
and place the model; when they change (loupe.toml edited, LOUPE_* changed), the next page run unloads
the old model (backend.unload() gives its GPU memory back) before loading the new one, so two models
never sit in memory together; a new model that cannot even be found leaves the old one loaded. A session that arrives while another is loading waits for that load and
attaches to it; it never starts a second one. Settings that do not need a reload (question limit,
image width, ...) apply at once.
"""
from __future__ import annotations

import threading

import streamlit as st

from core.backends import LoadProgress, ProgressCallback, create_backend
from core.errors import LoupeError
from core.history import HistoryStore
from core.serving.engine import Engine
from core.settings import Settings, load_settings

# The settings that decide which weights are loaded and where; any other setting applies without a reload.
LOAD_KEYS = ("model", "backend", "device", "trust_remote_code", "max_memory_gb", "split", "openai_base_url",
             "openai_api_key")


class ModelSlot:
    """Holds this process's one engine; asking for another model unloads the current one first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[object, ...] | None = None
        self.engine: Engine | None = None

    @staticmethod
    def key_for(settings: Settings) -> tuple[object, ...]:
        return tuple(getattr(settings, name, None) for name in LOAD_KEYS)

    def get(self, settings: Settings, progress: ProgressCallback | None = None) -> Engine:
        key = self.key_for(settings)
        with self.lock:
            if self.engine is not None and self.key == key:
                self.engine.settings = settings
                return self.engine
            # Resolve and pre-flight the new model first (no weights yet; the old one's GPU memory counts as
            # free): a mistyped path or a model that cannot fit must not cost the loaded model.
            backend = create_backend(settings, replacing=self.engine.backend if self.engine else None)
            self.release()
            backend.load(progress)
            self.engine, self.key = Engine(backend=backend, settings=settings), key
            return self.engine

    def release(self) -> None:
        """Unload the current model, if any (its GPU memory is returned)."""
        if self.engine is not None:
            engine, self.engine, self.key = self.engine, None, None
            from core.serving.scheduler import close_scheduler_for

            close_scheduler_for(engine)  # stop its queue worker first: nothing may run on an unloaded model
            engine.backend.unload()

    def is_loading(self, settings: Settings) -> bool:
        return self.lock.locked() and self.key != self.key_for(settings)


@st.cache_resource(show_spinner=False)
def model_slot() -> ModelSlot:
    return ModelSlot()


def get_engine() -> Engine:
    """The engine for the current settings, loading it (with a progress bar and log lines) if needed."""
    settings = load_settings()
    slot = model_slot()
    if slot.engine is not None and slot.key == slot.key_for(settings):
        slot.engine.settings = settings
        return slot.engine
    if slot.is_loading(settings):
        with st.spinner("Another session is loading the model; this page attaches to it when it is ready…"):
            return slot.get(settings)
    bar = st.progress(0.0, text="Loading the model…")
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
        st.error(f"The model could not be loaded: {exc}")
        st.stop()
        raise  # unreachable: st.stop() ends the run


@st.cache_resource(show_spinner=False)
def _history(path: str) -> HistoryStore:
    return HistoryStore(path)


def get_history() -> HistoryStore:
    """The history database at Settings.history_path (opened and migrated once per process)."""
    return _history(str(load_settings().history_path))

