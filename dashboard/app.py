"""Loupe's entry point: routing only. Start it with the README's run command.

`core` and `dashboard` are imported as the installed project (`pip install -e .`, done by make run/test).
"""
import streamlit as st

from core.errors import LoupeError
from core.serving.metrics import export_metrics
from core.settings import load_settings
from dashboard.widgets.answer_panel import stop_interrupted_answer
from dashboard.widgets.interface_language import show_language_switch, t
from dashboard.widgets.model_card import show_model_card
from dashboard.widgets.model_resource import get_engine
from dashboard.widgets.session import session_id
from dashboard.widgets.sign_in import require_sign_in

st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")

show_language_switch()  # first: the sign-in and the settings error are in the analyst's language too
try:
    settings = load_settings()
    export_metrics(settings)  # Prometheus metrics on `metrics_port`, once per process; off by default
except LoupeError as exc:
    st.error(t("app.settings_wrong"))
    st.text(str(exc))  # quotes the value as it was set: shown as text, never as Markdown
    st.stop()
require_sign_in(settings)  # draws the sign-in (or the refusal) and stops here until the analyst may come in
session_id()
stop_interrupted_answer()  # a click while an answer streamed: recorded as stopped before the page reads history

# The Playground has its own address, /playground (a default page is served only at `/`, so a link or bookmark
# to /playground said "Page not found"); `/` is a hidden page that switches to it.
playground = st.Page("../pages/playground.py", title=t("nav.playground"), icon=":material/chat:",
                     url_path="playground")


def open_playground() -> None:
    # The address's parameters go along (st.switch_page drops them otherwise): a bookmark or refresh of
    # /?session=...&c=... must keep its session and conversation.
    st.switch_page(playground, query_params=st.query_params.to_dict())


pages = {
    t("nav.ask"): [
        st.Page(open_playground, title=t("nav.playground"), default=True, visibility="hidden"),
        playground,
        st.Page("../pages/documents.py", title=t("nav.documents"), icon=":material/description:"),
        st.Page("../pages/education.py", title=t("nav.education"), icon=":material/school:"),
        st.Page("../pages/moderation.py", title=t("nav.moderation"), icon=":material/shopping_cart:",
                url_path="moderation"),
    ],
    t("nav.analyse"): [  # Compare, Review and Batch pages belong here
        st.Page("../pages/compare.py", title=t("nav.compare"), icon=":material/compare:"),
        st.Page("../pages/review.py", title=t("nav.review"), icon=":material/fact_check:"),
        st.Page("../pages/batch.py", title=t("nav.batch"), icon=":material/dynamic_feed:"),
        st.Page("../pages/history.py", title=t("nav.history"), icon=":material/history:"),
    ],
    t("nav.monitor"): [
        st.Page("../pages/gpu_monitor.py", title=t("nav.gpu_monitor"), icon=":material/monitoring:"),
    ],
}
page = st.navigation(pages)
try:
    show_model_card(get_engine().describe())
except LoupeError as exc:
    st.sidebar.error(t("app.no_model", reason=exc))  # t escapes the reason: it may quote a path or a reply
page.run()
