"""Review: moderation verdicts one at a time at Label Studio's pace (keys a = agree, 1/2/3 = pass / needs review /
reject, n/p = next/previous, z = zoom), with an override's reason and note; agreement and Cohen's kappa per
template (with its sample size), override reasons, exports. Reviews are in the history database."""
import hashlib

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.analysis import review
from core.analysis.review import ReviewItem
from core.errors import LoupeError
from core.history import HistoryStore
from core.inputs.moderation import UNPARSED
from core.table_export import ExportTable
from dashboard.widgets.core_text import core_text
from dashboard.widgets.display_time import analyst_zone_name
from dashboard.widgets.interface_language import Markup, override_reason_word, t, verdict_word
from dashboard.widgets.key_shortcuts import bind_keys
from dashboard.widgets.model_resource import get_history
from dashboard.widgets.outside_text import markdown_text, plotly_text
from dashboard.widgets.sign_in import reviewer_identity
from dashboard.widgets.table_downloads import table_downloads
from dashboard.widgets.verdict_panel import show_verdict

AGREE = "agree"
SHOWN = {"": "review.show_all", False: "review.show_unreviewed", True: "review.show_reviewed"}  # keys of words
# One button per decision; each key clicks its button (dashboard/widgets/key_shortcuts.py).
DECISION_KEYS = {AGREE: "a", "pass": "1", "needs_review": "2", "reject": "3"}
KAPPA_MIN_REVIEWS = 20  # under this many reviews a template's kappa swings with each one: a warning says so
ITEM_KEY = "review-item"  # which item the decision widgets were last reset for

store = get_history()
st.title(t("review.title"))
st.caption(t("review.intro"))

with st.container(border=True):
    a, b, c, d = st.columns([3, 4, 3, 3])  # "Show" needs room for its three choices
    # Option words looked up now, in this run's language: a format_func may also be called between runs.
    verdict_words = {status: verdict_word(status) for status in [*review.LABELS, UNPARSED]}
    shown_words = {value: t(key, escape=str) for value, key in SHOWN.items()}
    all_templates = t("review.all_templates", escape=str)
    verdicts = a.multiselect(t("review.verdict"), list(verdict_words), format_func=verdict_words.__getitem__,
                             key="review-verdicts", placeholder=t("review.any_verdict", escape=str))
    shown = b.segmented_control(t("review.show"), list(SHOWN), default=False, key="review-shown",
                                format_func=shown_words.__getitem__)
    template_id = c.selectbox(t("review.template"), ["", *review.template_ids(store)], key="review-template",
                              format_func=lambda x: x or all_templates)
    dates = d.date_input(t("review.dates", zone=analyst_zone_name()), value=[], key="review-dates", format="YYYY-MM-DD")
flt = review.ReviewFilter(verdicts=tuple(verdicts), reviewed=None if shown in ("", None) else shown,
                          template_id=template_id, date_from=dates[0] if dates else None,
                          date_to=dates[1] if len(dates) > 1 else (dates[0] if dates else None),
                          time_zone=analyst_zone_name())  # the days picked are the analyst's
position_key = "review-at-" + hashlib.sha1(repr(flt).encode()).hexdigest()[:12]
position = int(st.session_state.get(position_key, 0))
items, total = review.queue(store, flt, page=position + 1, page_size=1)
if not items and position:
    position = st.session_state[position_key] = max(total - 1, 0)
    items, total = review.queue(store, flt, page=position + 1, page_size=1)


def _zoom(store: HistoryStore, sha256: str) -> None:
    @st.dialog(t("review.zoom_title"), width="large")  # titled when opened, in the language of that moment
    def full_size() -> None:
        stored = store.image(sha256)
        if stored is not None:
            st.image(stored.data, caption=t("review.as_model_saw", width=stored.width, height=stored.height))
    full_size()


def _reset_decision(item: ReviewItem) -> None:
    """A new item starts with "Agree" chosen (none on an unreadable answer: it has nothing to agree with), and
    with no reason or note: set before the widgets are drawn, whatever the last item was."""
    if st.session_state.get(ITEM_KEY) != item.query_id or "review-decision" not in st.session_state:
        st.session_state[ITEM_KEY] = item.query_id
        st.session_state["review-decision"] = None if item.verdict.status == UNPARSED else AGREE
        st.session_state["review-reason"] = ""
        st.session_state["review-note"] = ""


def _save(item: ReviewItem, decision: str | None, reason: str, note: str) -> None:
    try:  # no label chosen: core's ReviewError says to choose one
        review.record(store, item.query_id, agree=decision == AGREE, label="" if decision == AGREE else decision or "",
                      reason=reason, note=note, reviewer=reviewer_identity())
    except LoupeError as exc:
        st.error(core_text(exc))
        return
    if flt.reviewed is not False:  # an unreviewed queue moves on by itself: this item has left it
        st.session_state[position_key] = position + 1
    st.rerun()


if not items:
    st.info(t("review.nothing"), icon=":material/task_alt:")
else:
    item = items[0]
    _reset_decision(item)
    st.caption(t("review.position", number=position + 1, total=total, id=item.query_id, page=item.page,
                 template=item.template_id, time=item.created_at[:19].replace("T", " ")))
    st.caption(t("review.reviewing_as", reviewer=reviewer_identity()))  # a signed-in name, or this session's id
    left, right = st.columns([2, 3], gap="large")
    with left:
        stored = store.image(item.image_sha256) if item.image_sha256 else None
        if stored is not None:
            st.image(stored.thumbnail, caption=t("review.thumbnail_caption", width=stored.width, height=stored.height))
            if st.button(t("review.zoom"), key="review-zoom", icon=":material/zoom_in:"):
                _zoom(store, item.image_sha256)
        st.text(item.question)
    with right:
        show_verdict(item.verdict)
        with st.expander(t("review.raw_output")):
            st.text(item.verdict.raw)
        if item.review is not None:
            r = item.review
            reviewed_at = r.reviewed_at[:19].replace("T", " ")
            st.caption((t("review.reviewed_agreed", time=reviewed_at) if r.agreed
                        else t("review.reviewed_overridden", time=reviewed_at, label=verdict_word(r.label),
                               reason=override_reason_word(r.reason) if r.reason else t("review.no_reason", escape=str)))
                       + (f" · {markdown_text(r.note)}" if r.note else ""))  # the reviewer's own words
            if r.reviewer:
                # The signed-in name (else a session id), shown as text.
                st.text(t("review.reviewer", escape=str, reviewer=r.reviewer))
        with st.container(border=True):
            choices = ([] if item.verdict.status == UNPARSED else [AGREE]) + list(review.LABELS)
            # An unreadable answer has no verdict to agree with, and no label is chosen for the analyst:
            # a save must never record "pass" for something nobody looked at.
            decision_words = {x: t("review.agree_with", escape=str, label=verdict_word(item.verdict.status))
                              if x == AGREE else t("review.override_to", escape=str, label=verdict_words[x])
                              for x in choices}
            reason_words = {"": "—"} | {x: override_reason_word(x) for x in review.REASONS}
            decision = st.radio(t("review.decision"), choices, horizontal=True, key="review-decision",
                                format_func=decision_words.__getitem__)
            reason = st.selectbox(t("review.reason"), list(reason_words), key="review-reason",
                                  format_func=reason_words.__getitem__)
            note = st.text_input(t("review.note"), key="review-note")
            if st.button(t("review.save"), type="primary", icon=":material/done:", key="review-save"):
                _save(item, decision, reason, note)
            quick = st.columns([1, 1, 1.5, 1])  # "Needs review (2)" is the longest label
            for column, (choice, key) in zip(quick, DECISION_KEYS.items(), strict=True):
                title = t("review.agree") if choice == AGREE else verdict_word(choice).capitalize()
                if column.button(f"{title} ({key})", key=f"review-key-{choice}", width="stretch",
                                 disabled=choice == AGREE and item.verdict.status == UNPARSED):
                    _save(item, choice, reason, note)
    p, n, _ = st.columns([1, 1, 4])
    if p.button(t("review.previous"), key="review-previous", disabled=position == 0, icon=":material/arrow_back:"):
        st.session_state[position_key] = position - 1
        st.rerun()
    if n.button(t("review.next"), key="review-next", disabled=position + 1 >= total, icon=":material/arrow_forward:"):
        st.session_state[position_key] = position + 1
        st.rerun()
    bind_keys({**{key: f"review-key-{choice}" for choice, key in DECISION_KEYS.items()},
               "n": "review-next", "p": "review-previous", "z": "review-zoom"})

st.subheader(t("review.agreement"))
stats = review.stats(store, flt)
if not stats.templates:
    st.caption(t("review.no_reviews"))
else:
    frame = pd.DataFrame([{"template": a.template_id, "reviewed": a.reviewed, "agreed": a.agreed,
                           "agreement": a.rate, "kappa": a.kappa} for a in stats.templates])
    # The frames keep English column names (their data); the headers shown are in the analyst's language.
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "template": t("review.column_template", escape=str), "agreed": t("review.column_agreed", escape=str),
        "reviewed": st.column_config.NumberColumn(t("review.reviewed_n", escape=str), help=t("review.reviewed_n_help")),
        "agreement": st.column_config.NumberColumn(t("review.column_agreement", escape=str), format="percent"),
        "kappa": st.column_config.NumberColumn(t("review.kappa", escape=str), format="%.2f",
                                               help=t("review.kappa_help"))})
    few = [a for a in stats.templates if a.reviewed < KAPPA_MIN_REVIEWS]
    if few:
        # Each part is already Markdown with its template id escaped: placed as it is.
        st.warning(t("review.few_reviews", templates=Markup("; ".join(
                       t("review.rests_on", template=a.template_id, count=a.reviewed) if a.reviewed != 1
                       else t("review.rests_on_one", template=a.template_id) for a in few))),
                   icon=":material/warning:")
    if all(a.agreed == 0 and not a.kappa for a in stats.templates):
        reviewed = sum(a.reviewed for a in stats.templates)
        st.caption(t("review.nothing_to_chart", reviewed=reviewed))
    else:
        ticks = [plotly_text(t) for t in frame["template"]]  # Plotly reads tick text as HTML
        chart = go.Figure([go.Bar(name=t("review.chart_agreement", escape=str), x=ticks, y=frame["agreement"]),
                           go.Bar(name=t("review.kappa", escape=str), x=ticks, y=frame["kappa"])])
        chart.update_layout(barmode="group", height=260, margin={"t": 10, "b": 10}, yaxis_range=[-1, 1])
        st.plotly_chart(chart, key="review-chart")
    by_verdict, reasons = st.columns(2)
    by_verdict.dataframe(pd.DataFrame([{"template": a.template_id, "model verdict": verdict_word(a.verdict),
                                        "reviewed": a.reviewed, "agreement": a.rate} for a in stats.verdicts]),
                         hide_index=True, column_config={
                             "template": t("review.column_template", escape=str),
                             "model verdict": t("review.column_model_verdict", escape=str),
                             "reviewed": t("review.column_reviewed", escape=str),
                             "agreement": st.column_config.NumberColumn(t("review.column_agreement", escape=str),
                                                                        format="percent")})
    reasons.dataframe(pd.DataFrame(stats.reasons, columns=["override reason", "count"]), hide_index=True,
                      column_config={"override reason": t("review.column_override_reason", escape=str),
                                     "count": t("review.column_count", escape=str)})
    x, xlsx, y, _ = st.columns([1, 1, 1, 3])
    table_downloads(x, xlsx, lambda: ExportTable.from_dicts("loupe-reviews", review.EXPORT_COLUMNS,
                                                             review.export_rows(store, flt)),
                    file_stem="loupe-reviews", key="review")
    y.download_button(t("review.export_json"), data=lambda: review.export_json(store, flt), file_name="loupe-reviews.json",
                      mime="application/json", key="review-json", icon=":material/download:")
