"""GPU monitor: every GPU's memory, load and temperature live, the stages of recent queries, CSV export."""
import datetime as dt

import pandas as pd
import streamlit as st

from core.telemetry import markers, readout
from core.telemetry.sampler import get_sampler
from dashboard.widgets.memory_chart import live_load_chart, live_memory_chart
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.status_line import show_status_line

WINDOWS = {"1 min": 60.0, "5 min": 300.0, "15 min": 900.0}

st.title("GPU monitor")
sampler = get_sampler()
if sampler.state != "ok":
    st.info(f"No GPU reading: {markdown_text(sampler.state)}. The charts show this process's memory (RSS) and CPU use instead.",
            icon=":material/info:")

window = st.segmented_control("Window", list(WINDOWS), default="5 min", key="gpu-monitor-window") or "5 min"
live_memory_chart(WINDOWS[window], key="gpu-monitor-memory")
live_load_chart(WINDOWS[window], key="gpu-monitor-load")


@st.fragment(run_every=2.0)
def recent_queries() -> None:
    rows = readout.trace_rows(markers.traces(since=dt.datetime.now().timestamp() - WINDOWS[window]))
    st.subheader("Recent queries")
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    else:
        st.caption("No query in this window yet: ask one and its stages appear here and as bands on the chart.")


recent_queries()
st.download_button(
    "Download samples (CSV)",
    data=lambda: pd.DataFrame(readout.rows(sampler.samples()), columns=readout.CSV_COLUMNS).to_csv(index=False),
    file_name="loupe-telemetry.csv",
    mime="text/csv",
    icon=":material/download:",
    help=f"Every sample in the buffer (the last {sampler.window_s / 60:.0f} minutes, one row per GPU per sample).",
)
show_status_line()
