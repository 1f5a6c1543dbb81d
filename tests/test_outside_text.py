"""Outside text (model answers, server errors, file names, API callers, reviewers) is shown as text, never as
Markdown or HTML: the escaping helper on a real CommonMark renderer, then each page path through AppTest on the
real demo model (issue #16 item 1; the browser proof is tests/e2e/test_outside_text.py)."""
from __future__ import annotations

import html
import io
import json
import re
import string
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.analysis import review, word_diff
from core.history import HistoryEntry, HistoryStore
from core.inputs.moderation import parse_verdict
from core.statuses import EntryStatus
from core.telemetry.snapshots import QueryTrace, StageMark, TelemetrySample
from dashboard.widgets.memory_chart import memory_figure
from dashboard.widgets.outside_text import WORD_JOINER, markdown_text, one_html_block, plotly_text
from tests.app_pages import APP, open_page

T0 = 1_790_000_000.0
PAYLOAD = "<img src=http://127.0.0.1:9/x.png> **b** [l](javascript:alert(1)) ![i](http://127.0.0.1:9/i.png)"
TRICKY = [
    PAYLOAD,
    "`close the code span` **x**",
    "&lt;b&gt; is not a tag, &amp; stays",
    "$x^2$ :red[red] :material/home: # heading",
    "ends in a backslash \\",
    "<script>alert(1)</script>",
    "- a list\n1. numbered\n> quote\n---",
    "+ plus\nheading?\n===\n  3) three\n   12. twelve\n* star\n***",
    "first\r- after a lone CR\r\n# after CR LF",
    "www.example.com and https://example.com/x.png and a@b.example",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    string.punctuation,
    "中文：理由（**加粗**）",
]


@pytest.mark.parametrize("text", TRICKY)
def test_escaped_text_renders_as_exactly_its_characters(text: str) -> None:
    rendered = MarkdownIt("gfm-like", {"linkify": False}).render(markdown_text(text))
    for tag in ("<img", "<a ", "<strong", "<em", "<code", "<script", "<h", "<ul", "<ol", "<blockquote",
                "<table", "<hr", "<s>", "<del"):
        assert tag not in rendered, (tag, rendered)
    # One paragraph whose text is the input's characters (HTML-escaped by the renderer); Markdown folds line
    # breaks and a line's leading spaces into one space, as it does for any paragraph.
    body = rendered.strip()
    assert body.startswith("<p>") and body.endswith("</p>") and body.count("<") == 2, rendered
    shown = html.unescape(body[3:-4]).replace(WORD_JOINER, "")  # the invisible joiner aside
    assert " ".join(shown.split()) == " ".join(text.split())


def test_bare_addresses_cannot_become_links() -> None:
    # Streamlit's Markdown links bare addresses in a pass over the text after escapes are undone (GFM autolink
    # literals, mdast-util-gfm-autolink-literal): its patterns, as that package writes them, find nothing.
    escaped = markdown_text("see http://127.0.0.1:9/x.png, HTTPS://a.example, www.example.com, mailto:a@b.com")
    assert not re.search(r"(https?://|www(?=\.))([-.\w]+)", escaped, re.IGNORECASE)
    assert not re.search(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", escaped)
    assert escaped.replace(WORD_JOINER, "") == "see http://127.0.0.1:9/x.png, HTTPS://a.example, www.example.com, mailto:a@b.com"


def test_the_word_diff_stays_one_html_block_whatever_the_answers_hold() -> None:
    # A blank line ends a Markdown HTML block; after it, an answer's own Markdown would be rendered.
    first, second = f"Fine.\n\n{PAYLOAD}", f"Fine too.\r\n\r\n{PAYLOAD} **more**"
    markup = one_html_block(word_diff.diff_html(word_diff.word_diff(first, second)))
    rendered = MarkdownIt("gfm-like", {"html": True, "linkify": False}).render(markup)
    assert "<img" not in rendered and "<a " not in rendered and "<strong" not in rendered, rendered
    assert 'class="loupe-diff"' in rendered and "&#10;" in rendered


def test_plotly_text_leaves_no_tag() -> None:
    assert plotly_text(PAYLOAD) == html.escape(PAYLOAD, quote=False) and "<" not in plotly_text(PAYLOAD)


def test_the_memory_chart_hover_quotes_the_question_as_text() -> None:
    # Plotly's hover reads <br>, <b>, <a href> as markup; the question is an analyst's or an API caller's.
    samples = [TelemetrySample(T0 + i, (), 1, None) for i in range(4)]
    stage = StageMark("decode", T0 + 1, T0 + 2, {"cpu": 0.4})
    question = "<a href='http://127.0.0.1:9/'>x</a><b>b</b>"
    hover = next(t for t in memory_figure(samples, [QueryTrace("q", "m", question, T0, T0 + 2, "answered", (stage,))]
                                          ).data if t.name == "stages").hovertext
    assert hover[0].endswith("<br>&lt;a href='http://127.0.0.1:9/'&gt;x&lt;/a&gt;&lt;b&gt;b&lt; (answered)"), hover


# -- each page path, through AppTest on the real demo model ------------------------------------------------
SAFE = markdown_text(PAYLOAD)
# What a file name can hold: no "/" (the payload's URLs lose their slashes, the markup stays).
FILE_NAME = "<img src=x.png> **b** [l](javascript:alert(1)) ![i](i.png)`.png"
CHECKLIST = (("exposure", "暴露"), ("prohibited", "违禁品"), ("claims", "虚假宣传"), ("brand", "品牌滥用"))


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "8")


_page = open_page


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def record_outside_text(home: Path) -> HistoryEntry:
    """A moderation result as an API caller would leave it: the `user` field, a model answer whose reasons are
    the payload, a remote server's error text; reviewed with the payload as the note. Written through core."""
    answer = json.dumps({"verdict": "reject", "items": {item: ["reject", PAYLOAD] for item, _ in CHECKLIST}},
                        ensure_ascii=False)
    verdict = parse_verdict(answer, CHECKLIST)
    store = HistoryStore(home / "history.sqlite3")
    entry = store.record(HistoryEntry(
        session_id=f"api:{PAYLOAD}", page="moderation", question=f"Is this allowed? {PAYLOAD}",
        status=EntryStatus.FAILED, template_id="mod-checklist-zh", answer=answer, verdict=verdict.status,
        verdict_detail=verdict.to_json(), error=f"The model server answered 500: {PAYLOAD}",
        error_type="GenerationError"))
    assert entry.id is not None
    review.record(store, entry.id, agree=False, label="pass", reason="false positive", note=PAYLOAD)
    return entry


def _shown(at: AppTest) -> list[str]:
    """Every Markdown-rendering body on the page: markdown, captions, alert boxes, table cells."""
    bodies = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success")
              for e in getattr(at, kind)]
    return bodies + [str(cell) for table in at.table for cell in table.value.reset_index().to_numpy().ravel()]


def _no_raw_payload(bodies: list[str]) -> None:
    raw = [b for b in bodies if "**b**" in b or "](" in b or "<img" in b]
    assert not raw, raw


def test_review_shows_reasons_and_the_note_as_text(loupe_home: Path) -> None:
    record_outside_text(loupe_home)
    at = _page("review")
    at.segmented_control(key="review-shown").set_value("").run()
    shown = _shown(at)
    _no_raw_payload(shown)
    assert sum(SAFE in b for b in shown) >= len(CHECKLIST) + 1  # every reason, and the note
    assert any(b.startswith("Reviewed ") and b.endswith(SAFE) for b in at.caption.values)


def test_history_shows_the_api_user_the_server_error_and_the_reasons_as_text(loupe_home: Path) -> None:
    record_outside_text(loupe_home)
    at = _page("history")
    shown = _shown(at)
    _no_raw_payload(shown)
    assert any(f"session {markdown_text('api:' + PAYLOAD)}" in c for c in at.caption.values)
    assert any(e.value.endswith(SAFE) for e in at.error)
    assert sum(SAFE in b for b in shown) >= len(CHECKLIST) + 2


def test_compare_shows_an_uploaded_file_name_as_text(loupe_home: Path) -> None:
    at = _page("compare")
    at.multiselect(key="compare-samples").set_value([]).run()
    at.file_uploader(key="compare-uploads").set_value((FILE_NAME, _png(), "image/png")).run()
    at.button(key="compare-run").click().run()
    assert not at.exception
    shown = _shown(at)
    _no_raw_payload(shown)
    assert any(markdown_text(FILE_NAME) in m for m in at.markdown.values)


def test_batch_refusal_shows_zip_member_names_as_text(loupe_home: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(PAYLOAD, b"not an image")
    at = _page("batch")
    at.file_uploader(key="batch-uploads").set_value(("photos.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="batch-start").click().run()
    assert not at.exception
    _no_raw_payload(_shown(at))
    assert any(SAFE in e.value and "No images were found" in e.value for e in at.error)


def test_a_model_that_cannot_load_is_named_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MODEL", FILE_NAME)
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception
    errors, sidebar = [e.value for e in at.error], [e.value for e in at.sidebar.error]
    _no_raw_payload(errors + sidebar)
    assert any(markdown_text(FILE_NAME) in e for e in errors), errors
    assert any(markdown_text(FILE_NAME) in e for e in sidebar), sidebar


class RefusingServer(BaseHTTPRequestHandler):
    """A stand-in OpenAI-compatible server that refuses with the payload as its error message."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"error": {"message": PAYLOAD, "type": "server_error"}}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_remote_servers_error_text_is_shown_as_text(monkeypatch: pytest.MonkeyPatch, refusing_server: str) -> None:
    monkeypatch.setenv("LOUPE_BACKEND", "openai")
    monkeypatch.setenv("LOUPE_OPENAI_BASE_URL", refusing_server)
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception
    errors = [e.value for e in at.error] + [e.value for e in at.sidebar.error]
    _no_raw_payload(errors)
    # core quotes the server's text with its tags taken out; the Markdown in it stays text on the page
    quoted = markdown_text(PAYLOAD.split("> ", 1)[1])
    assert len([e for e in errors if quoted in e]) >= 2, errors  # the sidebar's and the page's
