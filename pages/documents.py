"""Documents: read cells, titles, totals and signatures off document screenshots."""
from dashboard.widgets.ask_form import render_ask_page

render_ask_page(
    page="documents", scenario="documents", title="Documents",
    intro="Screenshots of PDFs, forms and reports: read one table cell, the title, a row's total, or check "
          "the signature. Point at cells by column and row, as you would to a colleague.",
)
