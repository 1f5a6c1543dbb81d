"""Playground: any image, any question (free, or from the general question patterns)."""
from dashboard.widgets.ask_form import render_ask_page
from dashboard.widgets.interface_language import t

render_ask_page(
    page="playground", scenario="general", title=t("ask.playground_title"), allow_free=True,
    intro=t("ask.playground_intro"),
)
