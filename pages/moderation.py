"""E-commerce moderation: a checklist verdict on a product image, parsed and kept for review."""
from dashboard.widgets.ask_form import render_ask_page

render_ask_page(
    page="moderation", scenario="moderation", title="E-commerce moderation",
    intro="Product images against a checklist (exposure, prohibited items, misleading claims such as "
          "“最便宜” or “第一”, brand misuse). The model answers in JSON; Loupe reads the verdict per item, and "
          "anything it cannot read is marked “unparsed — needs review” with the raw answer kept.",
)
