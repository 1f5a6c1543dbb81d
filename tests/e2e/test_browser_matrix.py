"""The compare matrix in a real headless Chromium (issue #17 item 7): 2 images × 2 templates as a matrix of
equal cells, two cells picked for the word diff, and the comparison still there after visiting History.
Screenshot in test-output/compare_matrix.png."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.history import HistoryFilter, HistoryStore, queries
from tests.e2e.conftest import CHROMIUM, OUTPUT, settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


@pytest.mark.parametrize("browser_page", [1400], indirect=True)
def test_compare_matrix_in_chromium(app_url: str, loupe_home: Path, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{app_url}/compare")
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    page.get_by_role("combobox", name="Sample images").click()
    page.get_by_role("option", name="Document screenshot: sales table (销售报表)").click()
    page.keyboard.press("Escape")
    settle(page)
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_role("heading", name="Comparison #1")).to_be_visible()
    cells = [page.locator(f".st-key-compare-cell-{i}-{j}") for i in range(2) for j in range(2)]
    for cell in cells:
        expect(cell).to_be_visible()
    heights = {round(cell.bounding_box()["height"]) for cell in cells}
    assert len(heights) == 1, heights  # every cell one height, whatever its answer's length
    rows = {round(cell.bounding_box()["y"]) for cell in cells}
    assert len(rows) == 2  # two rows of two: a matrix, not a column of cells
    expect(page.locator(".st-key-compare-header-0")).to_contain_text("Check this electronics product photo")  # the prompt text
    expect(page.get_by_role("img").first).to_be_visible()  # the thumbnails
    # Typed, as an analyst narrows a long list: a click alone can land while the page's one-second status
    # fragment redraws, and the list then closes before an option is picked.
    box = page.get_by_role("combobox", name="From")
    box.click()
    box.press_sequentially("Image 2")
    expect(page.get_by_role("option", name="Image 2", exact=False).last).to_be_visible()
    page.keyboard.press("Enter")
    settle(page)
    expect(page.locator(".loupe-diff")).to_be_visible()
    expect(page.get_by_text("of words in common", exact=False)).to_be_visible()
    page.locator(".loupe-diff").scroll_into_view_if_needed()
    settle(page)
    page.screenshot(path=str(OUTPUT / "compare_matrix.png"), full_page=True)
    chosen = page.locator(".st-key-compare-diff-a").evaluate(
        "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
    assert "Image 2" in chosen
    # Away to History and back by the sidebar: the comparison is still shown.
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History", exact=True)).to_be_visible()
    page.get_by_role("link", name="Compare").click()
    expect(page.get_by_role("heading", name="Comparison #1")).to_be_visible()
    expect(cells[3]).to_be_visible()
    rows_saved = queries.listing(HistoryStore(loupe_home / "history.sqlite3"), HistoryFilter(pages=("compare",))).rows
    assert len(rows_saved) == 4
