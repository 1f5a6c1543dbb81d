"""Browser tests' shared parts: the app started as the README starts it, and a headless Chromium page."""
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


def serve_streamlit(script: str | Path = "dashboard/app.py", *, address: str = "127.0.0.1",
                    args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Iterator[str]:
    """`python -m streamlit run SCRIPT` from the repository root (so .streamlit/config.toml applies), as the
    README starts it, on a free port; yields its URL and stops it afterwards."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", address, "--server.headless", "true", *args],
        # English unless a test says otherwise: the pages' contexts are zh-CN browsers, which would otherwise get
        # the Chinese interface, and the tests read English labels (test_interface_language.py sets auto).
        cwd=ROOT, env={**os.environ, "LOUPE_MAX_NEW_TOKENS": "48", "PYTHONUNBUFFERED": "1",
                       "LOUPE_INTERFACE_LANGUAGE": "en", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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


@pytest.fixture
def app_url(loupe_home: Path, tmp_path: Path) -> Iterator[str]:
    """The dashboard on loopback with its own LOUPE_HOME."""
    yield from serve_streamlit()


def settle(page) -> None:
    """Wait until the app's script run is over, no element is stale and none still loading (a skeleton),
    so a screenshot shows the page as the analyst sees it."""
    page.wait_for_function("""() => {
        const app = document.querySelector('[data-testid="stApp"]');
        return app !== null && app.getAttribute("data-test-script-state") === "notRunning"
            && document.querySelector('[data-stale="true"]') === null
            && document.querySelector('[data-testid^="stSkeleton"]') === null;
    }""")


@pytest.fixture
def chromium() -> Iterator[object]:
    """Debian's headless Chromium, driven offline by Playwright; expectations wait up to 2 minutes."""
    from playwright.sync_api import expect, sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    expect.set_options(timeout=120_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, height: int = 1800):
    """A page of its own browser context (its own cookies and Streamlit session), Chinese locale."""
    page = browser.new_context(viewport={"width": 1440, "height": height}, locale="zh-CN").new_page()
    page.set_default_timeout(120_000)
    return page


@pytest.fixture
def browser_page(request: pytest.FixtureRequest, chromium) -> object:
    """One page in headless Chromium; `request.param` (indirect parametrisation) sets its height."""
    return new_page(chromium, getattr(request, "param", 1800))
