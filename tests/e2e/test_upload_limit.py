"""Uploading more than the limit on the Batch page in a real headless Chromium (issue #16 item 6): with the
server's maxUploadSize and the batch_max_mb setting both at 1 MB, a 2 MB zip is refused with a message that
names the limit, never a raw "AxiosError 413". Screenshot in test-output/upload-limit.png."""
from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM, OUTPUT, serve_streamlit, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


@pytest.fixture
def small_limit_url(loupe_home: Path) -> Iterator[str]:
    yield from serve_streamlit(args=("--server.maxUploadSize", "1"),
                               env={"LOUPE_BATCH_MAX_MB": "1", "LOUPE_MAX_NEW_TOKENS": "16"})


def _two_mb_zip() -> bytes:
    noise = random.Random(16).randbytes(2 * 2**20)  # does not compress: the zip stays 2 MB
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("photos/big.png", noise)
    return buffer.getvalue()


def test_a_zip_over_the_limit_is_refused_with_the_limit_named(small_limit_url: str, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{small_limit_url}/batch")
    expect(page.get_by_role("heading", name="Batch", exact=True)).to_be_visible()
    settle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "products.zip", "mimeType": "application/zip", "buffer": _two_mb_zip()}])
    uploader = page.locator('[data-testid="stFileUploader"]')
    chip = uploader.get_by_test_id("stFileChip")
    expect(chip).to_have_attribute("aria-invalid", "true")  # refused in the browser: never sent, so no 413
    # Streamlit's own message, from the uploader's max_upload_size (= batch_max_mb): on hover, and read out
    # by screen readers as the file's description.
    expect(chip).to_have_accessible_description("Error: File must be 1.0MB or smaller.")
    uploader.get_by_test_id("stTooltipErrorHoverTarget").hover()
    expect(page.get_by_text("File must be 1.0MB or smaller.")).to_be_visible()
    settle(page)
    page.screenshot(path=str(OUTPUT / "upload-limit.png"), full_page=True)
    shown = page.locator('[data-testid="stApp"]').inner_text()
    assert "AxiosError" not in shown and "413" not in shown, shown
    expect(page.get_by_role("main").get_by_text("1 MB)", exact=False)).to_be_visible()  # the page states the limit
    expect(page.get_by_role("button", name="Start batch")).to_be_disabled()
