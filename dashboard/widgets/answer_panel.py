"""Streams an answer into the page, then shows what history recorded: text, timings, tokens, memory, errors.

Model output is always drawn with st.text (or st.code, which adds a copy button), never as Markdown or HTML:
st.write_stream would render Markdown, turning a model's `![x](http://…)` into an image fetched by the
analyst's browser and its `#` lines into headings. Plain text shows exactly what the model wrote.

The growing answer is redrawn at most REDRAWS_PER_S times a second, the last text always: an eye reads no
faster, and reading and redrawing it per token (a wake-up and a message to the browser each, under the GIL the
generation thread needs) slowed generation itself (issue #17 item 1). Each redraw also costs the browser: in
headless Chromium on 2 cores, a 1024-token answer on the demo model (about 4 s) took 1.3 s of the renderer's
JavaScript at 10 redraws a second and 0.6 s at 1 (CDP's Performance metrics); 5 a second still reads as text
growing.

Stop (or any other click) while an answer streams: Streamlit (runner.fastReruns, its default) starts the page's
next run at once, in a new thread, and tells the interrupted one to end at its next draw; its output is thrown
away. The next run therefore stops the answer itself (stop_interrupted_answer, first thing in app.py) so the
stopped turn is in history before the page reads the conversation from it; the interrupted run's own ending
then writes nothing more.
"""
from __future__ import annotations

import streamlit as st

from core.errors import is_refusal
from core.history import HistoryEntry
from core.inputs.moderation import Verdict
from core.serving.recorded_ask import RecordedAsk
from core.serving.ticket import describe_position
from core.statuses import EntryStatus
from dashboard.widgets.core_text import core_text
from dashboard.widgets.interface_language import t
from dashboard.widgets.verdict_panel import show_verdict

STAGES = ("queue", "preprocess", "vision", "prefill", "decode", "total")  # queue: rows before issue 17 show 0
POSITION_REFRESH_S = 0.25  # how often "2 requests ahead" is redrawn while a question waits
REDRAWS_PER_S = 5.0  # live to the eye; each redraw wakes two of the server's threads and costs the browser's renderer
ANSWERING = "loupe-answering"  # session state: the answer this session is streaming, while it streams
HIDE_STATUS_STOP = '<style>[data-testid="stStatusWidget"] button { display: none; }</style>'


def stream_answer(run: RecordedAsk, area: st.delta_generator.DeltaGenerator, *, copyable: bool = False,
                  compact: bool = False) -> HistoryEntry | None:
    """Show the question's place in the model's queue while it waits, stream the answer's text into `area`
    (an st.empty) as it comes, then replace it with the recorded result. Errors are not raised: history
    has them and show_entry draws them with st.error."""
    growing = run.growing_text(1.0 / REDRAWS_PER_S)
    try:
        with area.container():
            status = st.empty()
            # Any click reruns the script, which interrupts this loop at its next draw; the `finally` below
            # then cancels the ticket (queued or running) and history keeps the question as "stopped".
            # Streamlit's own running indicator has a Stop too, which ends the script without drawing the stopped
            # turn: hidden while this one shows, so there is one Stop and it keeps what arrived (issue #17 item 5).
            st.html(HIDE_STATUS_STOP)
            st.button(t("answer.stop"), key=f"loupe-stop-{id(run)}", icon=":material/stop_circle:")
            text = st.empty()
            st.session_state[ANSWERING] = run
            run.start()
            assert run.ticket is not None
            while not run.ticket.wait_started(timeout=POSITION_REFRESH_S):
                status.caption(t("answer.waiting", position=describe_position(run.ticket)))
            status.caption(t("answer.answering"))
            for shown in growing:
                text.text(shown)
    except Exception:  # noqa: BLE001 - recorded in history by RecordedAsk; show_entry shows it
        pass
    finally:
        growing.close()  # a rerun mid-stream lands here: the row is written as "stopped"
        run.stop()  # also when it was still queued (the text was never read): cancelled, recorded as stopped
        if st.session_state.get(ANSWERING) is run:  # not the next run's answer, if that one has started one
            del st.session_state[ANSWERING]
    area.empty()
    if run.entry is not None:
        with area.container():
            show_entry(run.entry, copyable=copyable, compact=compact)
    return run.entry


def stop_interrupted_answer() -> None:
    """Stop the answer an interrupted run of this session was streaming, and wait until it is recorded (at
    most until its next token): called before a page reads history, so the stopped turn is drawn."""
    interrupted = st.session_state.pop(ANSWERING, None)
    if interrupted is not None:
        interrupted.stop()


def show_entry(entry: HistoryEntry, *, with_reference: bool = True, compact: bool = False,
               copyable: bool = False) -> None:
    """One recorded query's outcome: the error if it failed, the answer as text (`copyable`: in a code block
    with its copy button), metrics, verdict. A stopped answer shows what arrived and its metrics."""
    if entry.status == "failed":
        # Loupe's own refusals are written for the analyst; anything else is a bug: say so, name it. Either
        # may quote a remote server's reply, a file name or the question: the message is shown as text.
        message = core_text(entry.error_message or entry.error) if is_refusal(entry.error_type) else (
            t("answer.unexpected_error", kind=entry.error_type, message=entry.error))
        st.error(message, icon=":material/error:")
    elif entry.status == "stopped":
        st.info(t("answer.stopped"), icon=":material/stop_circle:")
    if entry.answer and copyable:
        st.code(entry.answer, language=None, wrap_lines=True)
    elif entry.answer:
        with st.container(border=True):
            st.text(entry.answer)
    elif entry.status == "answered":
        st.caption(t("answer.no_text"))
    if entry.status == "answered" and entry.truncated:
        limit = entry.stamp.get("generation", {}).get("max_new_tokens")
        st.caption(t("answer.cut_at", limit=limit) if isinstance(limit, int) else t("answer.cut_at_limit"))
    if entry.status == EntryStatus.ANSWERED or (entry.status == EntryStatus.STOPPED and entry.output_tokens):
        show_metrics(entry, compact=compact)
    if entry.verdict and entry.verdict_detail:
        show_verdict(Verdict.from_json(entry.verdict_detail, entry.answer))
    if with_reference and entry.id is not None:
        st.caption(t("answer.recorded_as", id=entry.id))


def show_metrics(entry: HistoryEntry, *, compact: bool = False) -> None:
    """Stage timings, tokens and tokens/s, then peak memory per GPU (or the process RSS on CPU).
    `compact` writes them as two lines of text, for narrow columns."""
    timings = [(t(f"stage.{stage}"), f"{entry.timings.get(stage, 0.0):.3f} s") for stage in STAGES]
    memory = entry.peak_memory_gb
    cells = [(t("answer.peak_gpu", index=k.removeprefix("cuda:")), f"{v:.2f} GB")
             for k, v in memory.items() if k.startswith("cuda")]
    if "cpu" in memory:
        cells.append((t("answer.process_rss"), f"{memory['cpu']:.2f} GB"))
    cells += [(t("answer.tokens_in_out"), f"{entry.input_tokens} / {entry.output_tokens}"),
              (t("answer.tokens_per_s"), f"{entry.tokens_per_s:.1f}")]
    if compact:
        for row in (timings, cells):
            st.markdown(" · ".join(f"{label} **{value}**" for label, value in row))
        return
    for row in (timings, cells):
        for col, (label, value) in zip(st.columns(max(len(STAGES), len(row))), row, strict=False):
            col.metric(label, value)
