"""GPU monitor: every GPU's memory, load and temperature live, the stages of recent queries, CSV/XLSX export."""
import datetime as dt

import pandas as pd
import streamlit as st

from core.table_export import CSV_MIME, XLSX_MIME, export_files
from core.telemetry import markers, readout
from core.telemetry.sampler import get_sampler
from dashboard.widgets.memory_chart import live_load_chart, live_memory_chart
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.status_line import show_status_line

WINDOWS = {"1 min": 60.0, "5 min": 300.0, "15 min": 900.0}
SNAPSHOT = "gpu-monitor-samples"  # (time taken, ExportFiles) in the session

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
# The download is a snapshot taken on request and handed to the buttons as bytes. A download built when clicked
# (a callable) failed now and then here: Streamlit deletes such a generated file at the second sweep of unused
# media, and this page's four timed fragments sweep several times a second, so under load the file was often
# gone before the browser fetched it. Bytes drawn by the page stay registered until the page's next full run.
snapshot_col, csv_col, xlsx_col = st.columns([2, 1, 1])
if snapshot_col.button("Snapshot the samples", key="gpu-monitor-snapshot", icon=":material/photo_camera:",
                       help=f"Every sample in the buffer now (the last {sampler.window_s / 60:.0f} minutes, one row "
                            "per GPU per sample), for download as CSV or XLSX."):
    st.session_state[SNAPSHOT] = (dt.datetime.now().strftime("%H:%M:%S"),
                                  export_files(readout.export_table(sampler.samples())))
if SNAPSHOT in st.session_state:
    taken_at, files = st.session_state[SNAPSHOT]
    snapshot_col.caption(f"{len(files.table.rows):,} rows, taken at {taken_at}.")
    csv_col.download_button("CSV", data=files.csv, file_name=files.table.csv_name, mime=CSV_MIME,
                            icon=":material/download:", key="gpu-monitor-csv")
    xlsx_col.download_button("XLSX", data=files.xlsx, file_name=files.table.xlsx_name, mime=XLSX_MIME,
                             icon=":material/table_view:", key="gpu-monitor-xlsx")
show_status_line()
