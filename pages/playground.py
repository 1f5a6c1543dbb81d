"""Playground: any image, any question (free, or from the general question patterns)."""
from dashboard.widgets.ask_form import render_ask_page

render_ask_page(
    page="playground", scenario="general", title="Playground", allow_free=True,
    intro="Any image, any question. The templates are the question patterns that work best: ask for one "
          "attribute of one object, whether something is at a place, or a list in a given order.",
)
