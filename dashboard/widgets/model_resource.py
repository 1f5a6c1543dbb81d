"""The loaded model, one per process (st.cache_resource), shared by every browser session."""
from __future__ import annotations

import streamlit as st

from core.backends import LoadProgress
from core.engine import Engine, load_engine
from core.settings import load_settings


@st.cache_resource(show_spinner=False)
def _engine(model: str, backend: str, device: str) -> Engine:
    # Keyed on what selects the model, so changing the model in the settings loads the new one.
    bar = st.progress(0.0, text="Loading model…")
    log = st.empty()
    lines: list[str] = []

    def progress(step: LoadProgress) -> None:
        lines.append(step.message)
        bar.progress(min(max(step.fraction, 0.0), 1.0), text=step.message)
        log.code("\n".join(lines[-8:]), language=None)

    engine = load_engine(load_settings(), progress)
    bar.empty()
    log.empty()
    return engine


def get_engine() -> Engine:
    settings = load_settings()
    return _engine(settings.model, settings.backend, settings.device)
