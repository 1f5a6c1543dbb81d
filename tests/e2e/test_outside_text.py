"""Outside text in a real headless Chromium (issue #16 item 1): one payload with an image, bold, a javascript: link
and a Markdown image goes through every path that brings outside text onto a page — a model's moderation reasons,
a remote server's error text, the API's `user` field and a reviewer's note (history rows written through core),
zip member names (Batch's refusal) and an uploaded file's name (Compare) — and comes out as text: no element
made of it, its characters visible, no request to the address it names. Screenshots in test-output/outside_*.png.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from dashboard.widgets.outside_text import WORD_JOINER
from tests.e2e.conftest import CHROMIUM, OUTPUT, settle
from tests.test_outside_text import PAYLOAD, record_outside_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]
# The uploader only takes a name that ends in an image suffix; a browser's file name may hold "/".
UPLOAD_NAME = PAYLOAD + ".png"
# The payload as the page shows it: an invisible word joiner keeps "http://…" from becoming a link.
SHOWN = PAYLOAD.replace("http://", f"http{WORD_JOINER}://")
# Links and images that are not the app's own (st.image is served from the app, icons are fonts).
FOREIGN = """app => [
    ...Array.from(document.querySelectorAll("a[href]"), a => a.href).filter(h => !h.startsWith(app + "/")
                                                                                && !h.startsWith("#")),
    ...Array.from(document.querySelectorAll("img"), i => i.src).filter(s => !s.startsWith(app + "/")
                                                                          && !s.startsWith("data:")
                                                                          && !s.startsWith("blob:")),
]"""


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def _zip_named_payload() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(PAYLOAD, b"not an image")
    return buffer.getvalue()


def _nothing_made_of_it(page, app_url: str, name: str) -> None:
    """No link or image of the payload's, no bold "b", and the payload's characters in the page's text."""
    from playwright.sync_api import expect

    settle(page)
    page.screenshot(path=str(OUTPUT / f"outside_{name}.png"), full_page=True)
    assert page.evaluate(FOREIGN, app_url) == []
    expect(page.locator("strong, b").filter(has_text=re.compile(r"^\s*b\s*$"))).to_have_count(0)
    assert PAYLOAD in page.evaluate("document.body.innerText").replace(WORD_JOINER, "")


@pytest.mark.parametrize("browser_page", [2200], indirect=True)
def test_outside_text_is_shown_as_text_on_every_page(app_url: str, loupe_home: Path, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    record_outside_text(loupe_home)

    # History: the API caller's `user` (the session), the server's error text, the model's reasons.
    page.goto(f"{app_url}/history")
    expect(page.locator('[data-testid="stTable"]')).to_be_visible()
    _nothing_made_of_it(page, app_url, "history")
    expect(page.get_by_text(f"session api:{SHOWN}", exact=False)).to_be_visible()
    expect(page.locator('[data-testid="stAlert"]').filter(has_text=f"answered 500: {SHOWN}")).to_be_visible()
    expect(page.locator('[data-testid="stTable"] td').filter(has_text=SHOWN)).to_have_count(4)

    # Review: the reasons in the verdict table, the reviewer's note in "Reviewed …".
    page.goto(f"{app_url}/review")
    page.locator('[data-testid="stButtonGroup"]').get_by_text("All", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Reviewed "))).to_be_visible()
    _nothing_made_of_it(page, app_url, "review")
    expect(page.get_by_text(re.compile(r"^Reviewed .* · " + re.escape(SHOWN) + "$"))).to_be_visible()
    expect(page.locator('[data-testid="stTable"] td').filter(has_text=SHOWN)).to_have_count(4)

    # Batch: a zip whose only member is named with the payload is refused, the name quoted.
    page.goto(f"{app_url}/batch")
    page.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(
        files=[{"name": "photos.zip", "mimeType": "application/zip", "buffer": _zip_named_payload()}])
    page.get_by_role("button", name="Start batch").click()
    expect(page.locator('[data-testid="stAlert"]').filter(has_text="No images were found")).to_be_visible()
    _nothing_made_of_it(page, app_url, "batch")
    expect(page.locator('[data-testid="stAlert"]').filter(has_text=f"No images were found: photos.zip/{SHOWN}")
           ).to_be_visible()

    # Compare: an upload named with the payload (its name was put in a code span inside bold).
    page.goto(f"{app_url}/compare")
    page.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(
        files=[{"name": UPLOAD_NAME, "mimeType": "image/png", "buffer": _png()}])
    expect(page.get_by_role("button", name=f"Remove {UPLOAD_NAME}")).to_be_visible()  # uploaded, name whole
    page.get_by_label("Max new tokens").fill("4")  # the answers are not the point: keep the run short
    page.get_by_label("Max new tokens").press("Tab")
    settle(page)
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_role("heading", name="Comparison #1")).to_be_visible()
    _nothing_made_of_it(page, app_url, "compare")
    expect(page.get_by_text(f"Image 2: {SHOWN}.png", exact=True)).to_be_visible()

    assert not [u for u in requested if "127.0.0.1:9/" in u or re.search(r"/[xi]\.png$", u)], requested
