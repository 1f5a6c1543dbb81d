"""The conversation on the scenario pages, driven with AppTest on the real demo model: follow-ups sent with the
earlier turns, the conversation reopened from the URL after a refresh, New conversation, Regenerate, refusals
before the model that are no history rows."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.backends.transformers_native import TransformersBackend
from core.history import HistoryStore, conversations
from core.inputs.samples import by_id as sample
from core.serving.recorded_ask import ImageUpload
from dashboard.widgets.chat_input import Submitted, refusal
from dashboard.widgets.interface_language import ENGLISH, interface_text
from tests.app_pages import APP, assert_no_exception, open_page


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "12")


def _send(at: AppTest, page: str, question: str) -> AppTest:
    at.chat_input(key=f"{page}-chat").set_value(question).run()
    assert_no_exception(at)
    return at


def _store(home: Path) -> HistoryStore:
    return HistoryStore(home / "history.sqlite3")


def test_three_turns_each_sent_with_the_ones_before_and_reopened_after_a_refresh(loupe_home: Path) -> None:
    at = open_page("documents")
    for question in ("What is the title?", "And the total of the first row?", "Who signed it?"):
        _send(at, "documents", question)
    assert [t.value for t in at.text] == ["What is the title?", "And the total of the first row?", "Who signed it?"]
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 3
    conversation, session = at.query_params["c"], at.query_params["session"]
    rows = conversations.turns(_store(loupe_home), conversation)
    assert [r.question for r in rows] == ["What is the title?", "And the total of the first row?", "Who signed it?"]
    assert rows[0].input_tokens < rows[1].input_tokens < rows[2].input_tokens  # earlier turns went into the prompt
    assert all(r.session_id == session and r.image_hashes == rows[0].image_hashes for r in rows)
    assert rows[0].template_id == "" and len({r.conversation_id for r in rows}) == 1
    # A refresh: a new browser session whose URL still holds ?session= and ?c=
    refreshed = AppTest.from_file(APP, default_timeout=180)
    refreshed.query_params["session"], refreshed.query_params["c"] = session, conversation
    refreshed.run()
    refreshed.switch_page("../pages/documents.py").run()
    assert_no_exception(refreshed)
    assert [t.value for t in refreshed.text] == [r.question for r in rows]
    assert [c.value for c in refreshed.code] == [r.answer for r in rows]
    assert refreshed.query_params["c"] == conversation


def test_new_conversation_starts_empty_with_the_template_question_again(loupe_home: Path) -> None:
    at = open_page("documents")
    template_question = at.chat_input(key="documents-chat").value
    _send(at, "documents", template_question)
    assert _store(loupe_home).get(1).template_id == "doc-cell-zh"  # the template went with the question it filled
    assert at.chat_input(key="documents-chat").value is None
    at.button(key="documents-new-conversation").click().run()
    assert not at.chat_message and "c" not in at.query_params
    assert at.chat_input(key="documents-chat").value == template_question
    _send(at, "documents", "Another question")
    assert at.query_params["c"] != _store(loupe_home).get(1).conversation_id


def test_regenerate_replaces_the_last_answer_and_history_keeps_both(loupe_home: Path) -> None:
    at = open_page("playground")
    _send(at, "playground", "What is in the picture?")
    _send(at, "playground", "What colour is it?")
    at.button(key="playground-regenerate-2").click().run()
    assert_no_exception(at)
    assert [t.value for t in at.text] == ["What is in the picture?", "What colour is it?"]
    rerun = _store(loupe_home).get(3)
    assert rerun.rerun_of == 2 and rerun.question == "What colour is it?"
    assert rerun.input_tokens == _store(loupe_home).get(2).input_tokens  # the same earlier turn was sent
    assert [r.id for r in conversations.turns(_store(loupe_home), at.query_params["c"])] == [1, 3]


def test_no_image_is_refused_on_the_page_and_is_no_history_row(loupe_home: Path) -> None:
    at = open_page("playground")
    at.segmented_control(key="playground-source").set_value("Upload").run()
    _send(at, "playground", "What is this?")
    assert [e.value for e in at.error] == [interface_text(ENGLISH, "chat.no_image")]
    assert _store(loupe_home).count() == 0 and not at.chat_message


def test_a_model_without_history_is_named_and_gets_each_question_alone(loupe_home: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TransformersBackend, "takes_history", False)
    at = open_page("playground")
    assert interface_text(ENGLISH, "conversation.no_history") in [c.value for c in at.caption]
    _send(at, "playground", "What is this?")
    _send(at, "playground", "What is this?")
    first, second = _store(loupe_home).get(1), _store(loupe_home).get(2)
    assert second.status == "answered" and second.input_tokens == first.input_tokens


def test_too_many_attachments_are_refused_before_the_model() -> None:
    photo = ImageUpload(sample("document-table").read(), "a.png")
    assert refusal(Submitted("Compare them", (photo,) * 5), limit=200, max_images=4, has_image=True) == \
        interface_text(ENGLISH, "chat.too_many", count=5, limit=4)
    assert refusal(Submitted("Compare them", (photo,) * 4), limit=200, max_images=4, has_image=True) is None
