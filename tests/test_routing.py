"""dashboard/app.py's routing, through Streamlit's own page resolver: every page has an address that opens it."""
from __future__ import annotations

from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from tests.app_pages import APP, assert_no_exception, registered_pages


def _resolve(at, address: str) -> dict | None:
    """The page Streamlit runs for a browser that opens /ADDRESS (None: it shows "Page not found")."""
    manager = PagesManager(APP)
    manager.set_script_intent("", address)
    return manager.set_pages_and_resolve(registered_pages(at), fallback_page_hash="")


def test_playground_opens_at_its_own_address_and_at_the_root() -> None:
    at = AppTest.from_file(APP, default_timeout=240).run()  # what a browser opening `/` gets
    assert_no_exception(at)
    found = _resolve(at, "playground")  # issue 17 item 10: /playground opened "Page not found"
    assert found is not None and found["script_path"].endswith("pages/playground.py")
    assert at.title[0].value == "Playground"  # `/` still opens the Playground
    for address, script in (("documents", "documents.py"), ("moderation", "moderation.py"), ("history", "history.py")):
        assert _resolve(at, address)["script_path"].endswith(f"pages/{script}")
    assert _resolve(at, "no-such-page") is None
