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
from dashboard.widgets.core_text import core_text
from dashboard.widgets.display_time import display_time
from dashboard.widgets.interface_language import Markup, outcome_word, t, verdict_word
from dashboard.widgets.model_resource import get_history, require_engine
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line
from dashboard.widgets.table_downloads import table_downloads

CURRENT = "batch-current"
REFRESH_S = 1.0
COLUMN_WORDS = {"image": "batch.column_image", "template": "batch.column_template", "status": "batch.column_status",
                "verdict": "batch.column_verdict", "answer": "batch.column_answer", "output_tokens": "batch.column_tokens",
                "seconds": "batch.column_seconds", "error": "batch.column_error"}

engine = require_engine()
store = get_history()
settings = engine.settings
st.title(t("batch.title"))
st.caption(t("batch.intro", files=settings.batch_max_files, mb=settings.batch_max_mb))
for resumed in batch_runner.resume_interrupted(engine, store):
    st.toast(t("batch.resumed", id=resumed), icon=":material/play_arrow:")

templates = {t.id: t for t in load_templates()}
with st.container(border=True):
    uploads = st.file_uploader(t("batch.uploads", mb=settings.batch_max_mb),
                               type=[s.lstrip(".") for s in IMAGE_SUFFIXES] + ["zip"],
                               accept_multiple_files=True, key="batch-uploads", max_upload_size=settings.batch_max_mb,
                               help=t("batch.uploads_help", mb=settings.batch_max_mb, files=settings.batch_max_files))
    chosen = st.multiselect(t("batch.templates"), list(templates), key="batch-templates",
                            default=["mod-checklist-zh"], format_func=lambda i: f"{templates[i].title} · {i}")
    max_new = st.number_input(t("batch.max_new_tokens"), 1, 8192, min(settings.max_new_tokens, 512), key="batch-max-new")
    if st.button(t("batch.start"), type="primary", icon=":material/play_arrow:", key="batch-start",
                 disabled=not uploads or not chosen):
        try:
            found = collect([ImageUpload(u.getvalue(), u.name) for u in uploads], BatchLimits.from_settings(settings))
            columns = [template_column(templates[i], max_chars=settings.max_question_chars) for i in chosen]
            batch_id = batch.create(store, found, columns, session_id=session_id(),
                                    generation=engine.default_generation(max_new_tokens=int(max_new)),
                                    max_question_chars=settings.max_question_chars)
        except LoupeError as exc:
            st.error(core_text(exc), icon=":material/folder_off:")  # quotes file and member names
        else:
            batch_runner.start(engine, store, batch_id)
            st.session_state[CURRENT] = batch_id

batches = batch.list_batches(store)
if not batches:
    st.caption(t("batch.no_batch"))
    st.stop()
# Only what never changes goes in the choice's label: it is drawn once per page run, while the progress below
# is redrawn every second (a status here read "running · 0/2" next to a finished batch).
labels = {b.id: t("batch.choice", escape=str, id=b.id, time=display_time(b.created_at), items=b.items) for b in batches}
if st.session_state.get(CURRENT) not in labels:
    st.session_state[CURRENT] = batches[0].id
batch_id = st.selectbox(t("batch.batch"), list(labels), format_func=labels.__getitem__, key=CURRENT)


@st.fragment(run_every=REFRESH_S)
def show_batch() -> None:
    """Redrawn every second on its own while the page is open: progress, ETA, the results so far."""
    job = batch_runner.runner(store, batch_id)
    now = batch.progress(store, batch_id, run_started=job.started_at if job is not None else "")
    offer = batch.controls(now, running_here=job is not None)
    eta = "" if now.eta_s is None or now.status == BatchStatus.DONE else t("batch.eta", seconds=now.eta_s)
    st.progress(now.fraction, text=t("batch.progress", finished=now.finished, total=now.total, done=now.done,
                                     failed=now.failed, status=outcome_word(now.status), eta=Markup(eta)))
    if job is not None and job.error:
        st.error(markdown_text(job.error))
    a, b, c, xlsx, d = st.columns([1, 1, 1, 1, 2])
    if offer.pause and a.button(t("batch.pause"), key="batch-pause", icon=":material/pause:"):
        batch_runner.pause(store, batch_id)
    if offer.resume and a.button(t("batch.resume"), key="batch-resume", icon=":material/play_arrow:"):
        batch_runner.start(engine, store, batch_id)
    if offer.retry_failed and b.button(t("batch.retry_failed"), key="batch-retry", icon=":material/replay:"):
        batch.retry_failed(store, batch_id)
        batch_runner.start(engine, store, batch_id)
    table_downloads(c, xlsx, lambda: batch.export_table(store, batch_id), file_stem=f"loupe-batch-{batch_id}",
                    key="batch", label="")
    d.download_button(t("batch.json"), data=lambda: batch.export_json(store, batch_id), mime="application/json",
                      file_name=f"loupe-batch-{batch_id}.json", key="batch-json", icon=":material/download:")
    rows = [{**asdict(r), "status": outcome_word(r.status), "verdict": verdict_word(r.verdict) if r.verdict else r.verdict}
            for r in batch.results(store, batch_id)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_order=["image", "template", "status", "verdict", "answer", "output_tokens", "seconds", "error",
                               "query_id"],
                 column_config={"query_id": st.column_config.NumberColumn(t("batch.column_history"), format="%d"),
                                **{c: t(k) for c, k in COLUMN_WORDS.items()}})
    skipped = batch.skipped(store, batch_id)
    if skipped:
        with st.expander(t("batch.skipped", count=len(skipped))):
            st.dataframe(pd.DataFrame([asdict(s) for s in skipped]), hide_index=True, width="stretch")


show_batch()
show_status_line()
