"""Batch: images or one zip × chosen templates, run in the background through the model's queue, with progress,
ETA, results filling in, downloads; a batch interrupted by a refresh or a restart resumes by itself."""
from dataclasses import asdict

import pandas as pd
import streamlit as st

from core.analysis import batch, batch_runner
from core.analysis.batch_input import IMAGE_SUFFIXES, BatchLimits, collect
from core.analysis.compare import template_column
from core.errors import LoupeError
from core.inputs.templates import load_templates
from core.serving.recorded_ask import ImageUpload
from core.statuses import BatchStatus
from dashboard.widgets.model_resource import get_history, require_engine
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line
from dashboard.widgets.table_downloads import table_downloads

CURRENT = "batch-current"
REFRESH_S = 1.0

engine = require_engine()
store = get_history()
settings = engine.settings
st.title("Batch")
st.caption(f"Upload images or one zip (folders are walked; up to {settings.batch_max_files} images, "
           f"{settings.batch_max_mb} MB) and choose templates; every image × template is answered and recorded in "
           "history, and moderation results go to the review queue.")
for resumed in batch_runner.resume_interrupted(engine, store):
    st.toast(f"Batch #{resumed} was interrupted; it resumes where it stopped.", icon=":material/play_arrow:")

templates = {t.id: t for t in load_templates()}
with st.container(border=True):
    uploads = st.file_uploader(f"Images or a zip (at most {settings.batch_max_mb} MB in all)",
                               type=[s.lstrip(".") for s in IMAGE_SUFFIXES] + ["zip"],
                               accept_multiple_files=True, key="batch-uploads", max_upload_size=settings.batch_max_mb,
                               help=f"At most {settings.batch_max_mb} MB of uploads and {settings.batch_max_files} "
                                    "images in one batch (settings batch_max_mb, batch_max_files).")
    chosen = st.multiselect("Templates (their fields take their defaults)", list(templates), key="batch-templates",
                            default=["mod-checklist-zh"], format_func=lambda i: f"{templates[i].title} · {i}")
    max_new = st.number_input("Max new tokens", 1, 8192, min(settings.max_new_tokens, 512), key="batch-max-new")
    if st.button("Start batch", type="primary", icon=":material/play_arrow:", key="batch-start",
                 disabled=not uploads or not chosen):
        try:
            found = collect([ImageUpload(u.getvalue(), u.name) for u in uploads], BatchLimits.from_settings(settings))
            columns = [template_column(templates[i], max_chars=settings.max_question_chars) for i in chosen]
            batch_id = batch.create(store, found, columns, session_id=session_id(),
                                    generation=engine.default_generation(max_new_tokens=int(max_new)),
                                    max_question_chars=settings.max_question_chars)
        except LoupeError as exc:
            st.error(markdown_text(exc), icon=":material/folder_off:")  # quotes file and member names
        else:
            batch_runner.start(engine, store, batch_id)
            st.session_state[CURRENT] = batch_id

batches = batch.list_batches(store)
if not batches:
    st.caption("No batch yet.")
    st.stop()
# Only what never changes goes in the choice's label: it is drawn once per page run, while the progress below
# is redrawn every second (a status here read "running · 0/2" next to a finished batch).
labels = {b.id: f"#{b.id} · {b.created_at[:19].replace('T', ' ')} · {b.items} items" for b in batches}
if st.session_state.get(CURRENT) not in labels:
    st.session_state[CURRENT] = batches[0].id
batch_id = st.selectbox("Batch", list(labels), format_func=labels.__getitem__, key=CURRENT)


@st.fragment(run_every=REFRESH_S)
def show_batch() -> None:
    """Redrawn every second on its own while the page is open: progress, ETA, the results so far."""
    job = batch_runner.runner(store, batch_id)
    now = batch.progress(store, batch_id, run_started=job.started_at if job is not None else "")
    offer = batch.controls(now, running_here=job is not None)
    eta = "" if now.eta_s is None or now.status == BatchStatus.DONE else f" · about {now.eta_s:.0f} s left"
    st.progress(now.fraction, text=f"{now.finished}/{now.total} items · {now.done} done · {now.failed} failed · "
                                   f"{now.status}{eta}")
    if job is not None and job.error:
        st.error(markdown_text(job.error))
    a, b, c, xlsx, d = st.columns([1, 1, 1, 1, 2])
    if offer.pause and a.button("Pause", key="batch-pause", icon=":material/pause:"):
        batch_runner.pause(store, batch_id)
    if offer.resume and a.button("Resume", key="batch-resume", icon=":material/play_arrow:"):
        batch_runner.start(engine, store, batch_id)
    if offer.retry_failed and b.button("Retry failed", key="batch-retry", icon=":material/replay:"):
        batch.retry_failed(store, batch_id)
        batch_runner.start(engine, store, batch_id)
    table_downloads(c, xlsx, lambda: batch.export_table(store, batch_id), file_stem=f"loupe-batch-{batch_id}",
                    key="batch", label="")
    d.download_button("JSON", data=lambda: batch.export_json(store, batch_id), mime="application/json",
                      file_name=f"loupe-batch-{batch_id}.json", key="batch-json", icon=":material/download:")
    rows = [asdict(r) for r in batch.results(store, batch_id)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_order=["image", "template", "status", "verdict", "answer", "output_tokens", "seconds", "error",
                               "query_id"],
                 column_config={"query_id": st.column_config.NumberColumn("history #", format="%d")})
    skipped = batch.skipped(store, batch_id)
    if skipped:
        with st.expander(f"{len(skipped)} file(s) skipped"):
            st.dataframe(pd.DataFrame([asdict(s) for s in skipped]), hide_index=True, width="stretch")


show_batch()
show_status_line()
