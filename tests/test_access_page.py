"""The sign-in gate drawn by the dashboard (issue #16 item 2), with Streamlit's AppTest on the real demo model:
the password page shows nothing of Loupe until the password is right; the analyst's name becomes the reviewer
Review records and shows; bound elsewhere with no sign-in configured, the app refuses and says how to fix it."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from core.analysis import review
from tests.app_pages import APP
from tests.test_pages_compare_review_batch import _moderation_results, _store


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "8")


@pytest.fixture()
def listening_everywhere():
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    yield
    streamlit_config.set_option("server.address", before)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="sign-in-name").set_value(name)
    at.text_input(key="sign-in-password").set_value(password)
    next(b for b in at.button if b.label == "Sign in").click().run()
    _ok(at)
    return at


def test_the_password_gate_shows_no_page_until_the_password_is_right(loupe_home: Path, engine, monkeypatch,
                                                                      listening_everywhere) -> None:
    monkeypatch.setenv("LOUPE_DASHBOARD_PASSWORD", "pässwörd 🔑")
    first, _second = _moderation_results(loupe_home, engine)
    at = AppTest.from_file(APP, default_timeout=240).run()
    _ok(at)
    assert [t.value for t in at.title] == ["Loupe"]
    assert [w.label for w in at.text_input] == ["Your name", "Password"]
    assert not at.sidebar.markdown and not at.sidebar.button  # no model card, no navigation, no page
    _sign_in(at, "Ada Lovelace", "pässwörd")
    assert any("Wrong password" in e.value for e in at.error) and [t.value for t in at.title] == ["Loupe"]
    _sign_in(at, "", "pässwörd 🔑")
    assert any("Give your name" in e.value for e in at.error)
    _sign_in(at, "  Ada   Lovelace ", "pässwörd 🔑")
    assert "Loupe" not in [t.value for t in at.title] and any(b.label == "Sign out" for b in at.sidebar.button)

    at.switch_page("../pages/review.py").run()
    _ok(at)
    at.radio(key="review-decision").set_value("reject")
    next(b for b in at.button if b.label == "Save review").click().run()
    _ok(at)
    assert review.get(_store(loupe_home), first).review.reviewer == "Ada Lovelace"
    at.segmented_control(key="review-shown").set_value(True).run()
    assert "Reviewer: Ada Lovelace" in [t.value for t in at.text]

    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    assert [w.label for w in at.text_input] == ["Your name", "Password"]


def test_listening_elsewhere_with_no_sign_in_refuses_and_says_how(listening_everywhere) -> None:
    at = AppTest.from_file(APP, default_timeout=120).run()
    _ok(at)
    assert [e.value for e in at.error] == ["Loupe is not serving pages: it needs a sign-in here."]
    (how,) = [t.value for t in at.text]
    assert "'0.0.0.0'" in how and "dashboard_password" in how and "[auth]" in how
    assert not at.text_input and not at.sidebar.button and not at.sidebar.markdown


def test_on_loopback_with_nothing_configured_the_app_opens() -> None:
    assert streamlit_config.get_option("server.address") == "127.0.0.1"  # .streamlit/config.toml
    at = AppTest.from_file(APP, default_timeout=240).run()
    _ok(at)
    assert not [w for w in at.text_input if w.key == "sign-in-name"] and at.title[0].value != "Loupe"
