"""Documents: read cells, titles, totals and signatures off document screenshots."""
from dashboard.widgets.ask_form import render_ask_page
from dashboard.widgets.interface_language import t

render_ask_page(
    page="documents", scenario="documents", title=t("ask.documents_title"),
    intro=t("ask.documents_intro"),
)
