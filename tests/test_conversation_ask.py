"""A page conversation through core.serving.recorded_ask: earlier turns sent with a follow-up, the turns kept
together in history (and read back after a refresh), a regenerate replacing its turn, Stop counting tokens."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.errors import QuestionError
from core.history import HistoryStore, conversations
from core.inputs.samples import by_id as sample
from core.records import Turn
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record

CONVERSATION = "c0ffee123456"


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history.sqlite3")


def _request(engine, question: str, *, history: tuple[Turn, ...] = (), max_new_tokens: int = 8, **changes) -> AskRequest:
    values = {"session_id": "0123456789ab", "page": "playground", "question": question,
              "images": (ImageUpload(sample("document-table").read(), "document-table"),),
              "generation": engine.default_generation(max_new_tokens=max_new_tokens),
              "conversation_id": CONVERSATION, "history": history}
    return AskRequest(**{**values, **changes})


def test_a_follow_up_carries_the_earlier_turns_and_history_keeps_them_together(engine, store: HistoryStore) -> None:
    first = ask_and_record(engine, store, _request(engine, "What is the title?")).run().entry
    history = (Turn(first.question, first.answer),)
    follow_up = ask_and_record(engine, store, _request(engine, "And the total?", history=history)).run().entry
    alone = ask_and_record(engine, store, _request(engine, "And the total?", conversation_id="")).run().entry
    # the earlier question and answer went into the prompt: more input tokens than the same question alone
    assert follow_up.input_tokens > alone.input_tokens
    assert [e.id for e in conversations.turns(store, CONVERSATION)] == [first.id, follow_up.id]
    assert follow_up.conversation_id == CONVERSATION and alone.conversation_id == ""
    assert conversations.turns(store, "") == ()


def test_a_regenerated_turn_replaces_the_one_it_reruns(engine, store: HistoryStore) -> None:
    first = ask_and_record(engine, store, _request(engine, "What is the title?")).run().entry
    again = ask_and_record(engine, store, _request(engine, "What is the title?", rerun_of=first.id)).run().entry
    assert [e.id for e in conversations.turns(store, CONVERSATION)] == [again.id]


def test_a_backend_without_history_refuses_the_follow_up_in_one_line(engine, store: HistoryStore,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(engine.backend), "takes_history", False)
    run = ask_and_record(engine, store, _request(engine, "And the total?", history=(Turn("Title?", "A form."),)))
    with pytest.raises(QuestionError, match="cannot take earlier turns"):
        run.run()
    assert run.entry is not None and run.entry.status == "failed" and run.entry.conversation_id == CONVERSATION


def test_stop_keeps_what_arrived_and_counts_its_tokens(engine, store: HistoryStore) -> None:
    run = ask_and_record(engine, store, _request(engine, "Describe every cell.", max_new_tokens=400))
    pieces = iter(run)
    arrived = next(pieces) + next(pieces)
    pieces.close()
    entry = store.get(run.entry.id)
    assert entry.status == "stopped" and entry.truncated and entry.answer.startswith(arrived.strip())
    assert 2 <= entry.output_tokens < 400  # the tokens generated before the stop, not 0
    assert entry.timings["decode"] > 0 and entry.input_tokens > 0


def test_growing_text_comes_a_few_times_a_second_and_ends_with_the_whole_answer(engine, store: HistoryStore) -> None:
    run = ask_and_record(engine, store, _request(engine, "Describe every cell.", max_new_tokens=160))
    started = time.perf_counter()
    texts = list(run.growing_text(0.25))
    elapsed = time.perf_counter() - started
    assert 1 <= len(texts) <= elapsed / 0.25 + 2  # at most once per interval, plus the end
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
    entry = run.entry
    assert entry.status == "answered" and texts[-1].strip().startswith(entry.answer)  # trimmed at a sentence end


def test_stopping_growing_text_records_a_stopped_row_with_its_tokens(engine, store: HistoryStore) -> None:
    run = ask_and_record(engine, store, _request(engine, "Describe every cell.", max_new_tokens=2000))
    growing = run.growing_text(0.05)
    arrived = next(growing)
    growing.close()
    entry = store.get(run.entry.id)
    assert entry.status == "stopped" and entry.answer.startswith(arrived) and 1 <= entry.output_tokens < 2000


def test_stop_from_the_next_page_run_records_one_stopped_row_while_the_old_run_still_streams(
        engine, store: HistoryStore) -> None:
    # Streamlit (runner.fastReruns) starts the next run of the page while the interrupted one is still inside its
    # stream: the next run stops the answer and reads the conversation, so the row must be written by then.
    run = ask_and_record(engine, store, _request(engine, "Describe every cell.", max_new_tokens=2000))
    growing = run.growing_text(0.05)
    arrived = next(growing)
    stopped = run.stop()
    assert stopped is not None and stopped.status == "stopped" and stopped.answer.startswith(arrived)
    assert 1 <= stopped.output_tokens < 2000 and conversations.turns(store, CONVERSATION) == (stopped,)
    list(growing)  # the old run goes on to its end (or is closed): no second row
    growing.close()
    assert store.count() == 1 and run.stop() == stopped


def test_stop_before_the_stream_was_read_cancels_the_queued_question_and_records_it(engine, store: HistoryStore) -> None:
    run = ask_and_record(engine, store, _request(engine, "Describe every cell.", max_new_tokens=2000))
    run.start()  # queued; the page was interrupted before it read any text
    stopped = run.stop()
    assert stopped is not None and stopped.status == "stopped" and stopped.output_tokens < 2000
    assert run.ticket is not None and run.ticket.wait(10.0) and store.count() == 1


def test_stop_after_the_answer_keeps_the_answered_row(engine, store: HistoryStore) -> None:
    run = ask_and_record(engine, store, _request(engine, "What is the title?")).run()
    assert run.stop() == run.entry and run.entry.status == "answered" and store.count() == 1
