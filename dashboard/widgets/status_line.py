"""The compact memory line for page footers: "GPU0: 15.2GB/22.2GB | GPU1: 8.5GB/22.2GB" (or this
process's RSS without a GPU), refreshed every second on its own without rerunning the page."""
from __future__ import annotations

import streamlit as st

from core.telemetry.readout import status_line
from core.telemetry.sampler import get_sampler
from dashboard.widgets.interface_language import t

REFRESH_S = 1.0


@st.fragment(run_every=REFRESH_S)
def show_status_line() -> None:
    """Place at the bottom of a page; reads the shared sampler's newest sample."""
    latest = get_sampler().latest()
    st.caption(f":material/memory: {status_line(latest) if latest is not None else t('status_line.no_sample')}")
