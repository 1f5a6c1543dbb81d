"""Text that came from outside Loupe's code, made safe to place where Streamlit or Plotly render markup.

Model answers, moderation reasons, a remote server's error text, file and zip member names, the API's `user`
field, reviewers' notes, questions and template text are shown as the text they are. st.markdown, st.caption,
st.error/warning/info/success, st.table cells, widget labels and tooltips all render Markdown (and Streamlit's
own directives, math and bare-URL links): a `![i](http://…)` there is an image the analyst's browser fetches.

Where a whole block is outside text, pages draw it with st.text / st.code / st.dataframe, which render nothing.
Where outside text sits inside a sentence Loupe writes (a caption, an error box, a table cell), the outside
part goes through `markdown_text`; in Plotly hover and axis text (a small HTML subset), through `plotly_text`.
"""
from __future__ import annotations

import html
import re

# Escaped wherever they are: emphasis, code spans, links and images, headings, tables, strikethrough, math
# (`$`), Streamlit's directives (`:red[…]`) and the escape character itself. A backslash before any ASCII
# punctuation makes it a literal in CommonMark. `<`, `>` and `&` become HTML entities instead, so that no tag
# and no entity of the text's own survives (`&amp;lt;` shows as the four characters `&lt;`).
_ESCAPED_EVERYWHERE = {ord(c): "\\" + c for c in "\\`*_[]()!#|~$"}
# Only at the start of a line: list items (`-`, `+`, `1.`), setext underlines (`===`, `---`), thematic breaks.
_LINE_START = re.compile(r"^([ \t]*)([-+=]|\d+(?=\.))", re.MULTILINE)
# Bare addresses become links in Streamlit's Markdown (GFM's autolink literals: http://…, https://…, www.…,
# a@b.c) even when escaped, because that pass reads the text after escapes are undone. An invisible WORD JOINER
# (U+2060: no width, no line break) between "http" and "://", "www" and ".", and before "@", breaks the pattern
# the pass looks for; the text reads the same. (A copied address then carries it: it is text, not a link.)
WORD_JOINER = "\u2060"
_BARE_LINK = re.compile(r"(?i)(?<=http)(?=://)|(?<=https)(?=://)|(?<=www)(?=\.)|(?=@)")

# Everything else (`.`, `,`, `:`, `-` inside a line) is left alone: it makes no markup there, and Loupe's own
# sentences around outside text stay as readable in tests and logs as they were.


def markdown_text(text: object) -> str:
    """`text` (anything; str() of it) written so that Streamlit's Markdown shows exactly its characters."""
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n")  # a lone CR ends a line in Markdown too
    escaped = html.escape(lines, quote=False).translate(_ESCAPED_EVERYWHERE)
    escaped = _LINE_START.sub(lambda m: m.group(1) + (f"{m.group(2)}\\" if m.group(2)[0].isdigit()
                                                      else "\\" + m.group(2)), escaped)
    return _BARE_LINK.sub(WORD_JOINER, escaped)


def plotly_text(text: object) -> str:
    """`text` for Plotly's hover, title and tick text, which read `<br>`, `<b>`, `<a href>` as markup."""
    return html.escape(str(text), quote=False)


def one_html_block(markup: str) -> str:
    """Escaped HTML (outside text inside Loupe's own tags) for st.markdown(unsafe_allow_html=True), on one line.

    Markdown reads an HTML block only up to its first blank line and parses what follows as Markdown again: a
    model answer with a blank line before `![i](http://…)` would become an image inside the word diff. Line
    breaks written as character references keep it one block; `white-space: pre-wrap` still shows them.
    """
    return markup.replace("\r", "&#13;").replace("\n", "&#10;")
