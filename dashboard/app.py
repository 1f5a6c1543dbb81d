"""Loupe's entry point: routing only. Start it with the README's run command.

`core` and `dashboard` are imported as the installed project (`pip install -e .`, done by make run/test).
"""
import streamlit as st

from core.errors import LoupeError
from core.serving.metrics import export_metrics
from core.settings import load_settings
from dashboard.widgets.model_card import show_model_card
from dashboard.widgets.model_resource import get_engine
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.session import session_id
from dashboard.widgets.sign_in import require_sign_in

st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")

try:
    settings = load_settings()
    export_metrics(settings)  # Prometheus metrics on `metrics_port`, once per process; off by default
except LoupeError as exc:
    st.error("Loupe's settings are wrong; correct them and reload the page.")
    st.text(str(exc))  # quotes the value as it was set: shown as text, never as Markdown
    st.stop()
require_sign_in(settings)  # draws the sign-in (or the refusal) and stops here until the analyst may come in
session_id()

# The Playground has its own address, /playground (a default page is served only at `/`, so a link or bookmark
# to /playground said "Page not found"); `/` is a hidden page that switches to it.
playground = st.Page("../pages/playground.py", title="Playground", icon=":material/chat:", url_path="playground")


def open_playground() -> None:
    st.switch_page(playground)


pages = {
    "Ask": [
        st.Page(open_playground, title="Playground", default=True, visibility="hidden"),
        playground,
        st.Page("../pages/documents.py", title="Documents", icon=":material/description:"),
        st.Page("../pages/education.py", title="Education", icon=":material/school:"),
        st.Page("../pages/moderation.py", title="E-commerce moderation", icon=":material/shopping_cart:", url_path="moderation"),
    ],
    "Analyse": [  # Compare, Review and Batch pages belong here
        st.Page("../pages/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("../pages/review.py", title="Review", icon=":material/fact_check:"),
        st.Page("../pages/batch.py", title="Batch", icon=":material/dynamic_feed:"),
        st.Page("../pages/history.py", title="History", icon=":material/history:"),
    ],
    "Monitor": [
        st.Page("../pages/gpu_monitor.py", title="GPU monitor", icon=":material/monitoring:"),
    ],
}
page = st.navigation(pages)
try:
    show_model_card(get_engine().describe())
except LoupeError as exc:
    st.sidebar.error(f"No model loaded: {markdown_text(exc)}")
page.run()
