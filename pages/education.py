"""Education: homework photos, from given conditions to a step-by-step solution."""
from dashboard.widgets.ask_form import render_ask_page
from dashboard.widgets.interface_language import t

render_ask_page(
    page="education", scenario="education", title=t("ask.education_title"),
    intro=t("ask.education_intro"),
)
