"""AppTest on the real dashboard: the app as routed by dashboard/app.py, switched to one page."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def registered_pages(at: AppTest) -> dict:
    """The pages the app's st.navigation registered in its last run (page hash → url path, script path)."""
    return dict(at._registered_pages)


def open_page(name: str, timeout_s: float = 240) -> AppTest:
    """The app run once, then switched to pages/NAME.py, with no exception on the way."""
    at = AppTest.from_file(APP, default_timeout=timeout_s).run()
    at.switch_page(f"../pages/{name}.py").run()
    assert_no_exception(at)
    return at
