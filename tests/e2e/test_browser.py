"""The README's run command, driven in a real headless Chromium: pick a sample, submit, see the streamed
answer and its history row. Screenshots land in test-output/ (look at them: Chinese must not be boxes)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy in {timeout_s:.0f} s")


@pytest.fixture
def app_url(loupe_home: Path, tmp_path: Path) -> Iterator[str]:
    """`python -m streamlit run dashboard/app.py` as the README starts it, on a free port, own LOUPE_HOME."""
    port = _free_port()
    env = {**os.environ, "LOUPE_MAX_NEW_TOKENS": "48", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _settle(page) -> None:
    """Wait until the app's script run is over, no element is stale and none still loading (a skeleton),
    so a screenshot shows the page as the analyst sees it."""
    page.wait_for_function("""() => {
        const app = document.querySelector('[data-testid="stApp"]');
        return app !== null && app.getAttribute("data-test-script-state") === "notRunning"
            && document.querySelector('[data-stale="true"]') === null
            && document.querySelector('[data-testid^="stSkeleton"]') === null;
    }""")


def test_documents_sample_to_history_in_chromium(app_url: str, loupe_home: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 1800}, locale="zh-CN")
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)
        page.goto(f"{app_url}/documents")
        expect(page.get_by_role("heading", name="Documents")).to_be_visible()
        expect(page.get_by_text("demo weights — answers are noise")).to_be_visible()
        expect(page.get_by_text("As the model sees it: 1240×860")).to_be_visible()
        question = page.get_by_role("textbox", name="Question")
        expect(question).to_have_value("图中表格第三列第一行的数值是多少？")
        assert "session=" in page.url
        session = page.url.split("session=")[1][:12]

        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_text("Recorded in history as #1.")).to_be_visible()
        expect(page.get_by_text("tokens/s")).to_be_visible()
        _settle(page)
        page.screenshot(path=str(OUTPUT / "documents-answer.png"), full_page=True)

        page.get_by_role("link", name="E-commerce moderation").click()
        expect(page.get_by_role("heading", name="E-commerce moderation")).to_be_visible()
        expect(page.get_by_text("As the model sees it: 1280×720")).to_be_visible()
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_text("Recorded in history as #2.")).to_be_visible()
        expect(page.get_by_text("Verdict: unparsed — needs review")).to_be_visible()
        _settle(page)
        page.screenshot(path=str(OUTPUT / "moderation-verdict.png"), full_page=True)
        assert f"session={session}" in page.url  # the session survived the page switch

        page.reload()  # a refresh keeps the session
        page.get_by_role("link", name="History").click()
        expect(page.get_by_role("heading", name="History")).to_be_visible()
        expect(page.get_by_text("2 queries match")).to_be_visible()
        page.get_by_role("combobox", name="Session").click()
        page.get_by_role("option", name=f"This session ({session})").click()
        expect(page.get_by_text("2 queries match")).to_be_visible()
        _settle(page)
        page.screenshot(path=str(OUTPUT / "history.png"), full_page=True)

        # The live memory chart, with the stage bands of the two questions just asked.
        page.get_by_role("link", name="GPU monitor").click()
        expect(page.get_by_role("heading", name="GPU monitor")).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        _settle(page)
        page.screenshot(path=str(OUTPUT / "gpu-monitor.png"), full_page=True)
        browser.close()
