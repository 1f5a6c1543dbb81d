"""Education: homework photos, from given conditions to a step-by-step solution."""
from dashboard.widgets.ask_form import render_ask_page

render_ask_page(
    page="education", scenario="education", title="Education",
    intro="Photos of homework and worksheets, printed and handwritten: the given conditions and the goal, "
          "a step-by-step solution, what is handwritten, and what the teacher marked.",
)
