"""GPU monitor: every GPU's memory, load and temperature live, the stages of recent queries, CSV/XLSX export."""
import datetime as dt

import pandas as pd
import streamlit as st

from core.table_export import CSV_MIME, XLSX_MIME, export_files
from core.telemetry import markers, readout
from core.telemetry.sampler import get_sampler
from dashboard.widgets.display_time import analyst_zone, display_time
from dashboard.widgets.interface_language import outcome_word, t
from dashboard.widgets.memory_chart import live_load_chart, live_memory_chart
from dashboard.widgets.status_line import show_status_line

WINDOWS = {"1 min": 60.0, "5 min": 300.0, "15 min": 900.0}
SNAPSHOT = "gpu-monitor-samples"  # (time taken, ExportFiles) in the session
WINDOW_WORDS = {"1 min": "gpu_monitor.window_1", "5 min": "gpu_monitor.window_5", "15 min": "gpu_monitor.window_15"}
WORDS = {"started": "gpu_monitor.column_started", "outcome": "gpu_monitor.column_outcome",
         "question": "gpu_monitor.column_question", "total_s": "gpu_monitor.column_total_s",
         "model": "gpu_monitor.column_model"}

st.title(t("gpu_monitor.title"))
sampler = get_sampler()
if sampler.state != "ok":
    st.info(t("gpu_monitor.no_gpu", state=sampler.state), icon=":material/info:")

window_words = {w: t(key) for w, key in WINDOW_WORDS.items()}  # this run's language
window = st.segmented_control(t("gpu_monitor.window"), list(WINDOWS), default="5 min",
                              format_func=window_words.__getitem__, key="gpu-monitor-window") or "5 min"
live_memory_chart(WINDOWS[window], key="gpu-monitor-memory")
live_load_chart(WINDOWS[window], key="gpu-monitor-load")


@st.fragment(run_every=2.0)
def recent_queries() -> None:
    rows = readout.trace_rows(markers.traces(since=dt.datetime.now().timestamp() - WINDOWS[window]), zone=analyst_zone())
    st.subheader(t("gpu_monitor.recent_queries"))
    if rows:
        frame = pd.DataFrame(rows)
        frame["outcome"] = frame["outcome"].map(outcome_word)
        st.dataframe(frame.rename(columns={c: t(k) for c, k in WORDS.items()}), hide_index=True)
    else:
        st.caption(t("gpu_monitor.no_recent_query"))


recent_queries()
# The download is a snapshot taken on request and handed to the buttons as bytes. A download built when clicked
# (a callable) failed now and then here: Streamlit deletes such a generated file at the second sweep of unused
# media, and this page's four timed fragments sweep several times a second, so under load the file was often
# gone before the browser fetched it. Bytes drawn by the page stay registered until the page's next full run.
snapshot_col, csv_col, xlsx_col = st.columns([2, 1, 1])
if snapshot_col.button(t("gpu_monitor.snapshot"), key="gpu-monitor-snapshot", icon=":material/photo_camera:",
                       help=t("gpu_monitor.download_help", minutes=sampler.window_s / 60)):
    st.session_state[SNAPSHOT] = (display_time(dt.datetime.now(dt.UTC)),
                                  export_files(readout.export_table(sampler.samples())))
if SNAPSHOT in st.session_state:
    taken_at, files = st.session_state[SNAPSHOT]
    snapshot_col.caption(t("gpu_monitor.snapshot_taken", rows=len(files.table.rows), time=taken_at))
    csv_col.download_button("CSV", data=files.csv, file_name=files.table.csv_name, mime=CSV_MIME,
                            icon=":material/download:", key="gpu-monitor-csv")
    xlsx_col.download_button("XLSX", data=files.xlsx, file_name=files.table.xlsx_name, mime=XLSX_MIME,
                             icon=":material/table_view:", key="gpu-monitor-xlsx")
show_status_line()
