"""E-commerce moderation: a checklist verdict on a product image, parsed and kept for review."""
from dashboard.widgets.ask_form import render_ask_page
from dashboard.widgets.interface_language import t

render_ask_page(
    page="moderation", scenario="moderation", title=t("ask.moderation_title"),
    intro=t("ask.moderation_intro"),
)
