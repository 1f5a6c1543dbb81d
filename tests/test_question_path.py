"""A question on its way to the real demo model: checked once, its image decoded once, and the prepared image
the page previews is the very one the model answers about."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.errors import QuestionError
from core.history import HistoryStore
from core.inputs import images, questions
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
from tests.image_factory import encode


def _png(width: int = 96) -> bytes:
    return encode(Image.new("RGB", (width, 64), "navy"), "PNG")


def _counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[object]:
    """Wrap the real function so a test can count its calls (it still runs)."""
    calls: list[object] = []
    real = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_the_engine_checks_a_question_once_and_decodes_its_image_once(engine, monkeypatch) -> None:
    checked = _counting(monkeypatch, questions, "validate")
    decoded = _counting(monkeypatch, images, "prepare")
    query = engine.build_query([_png()], " What is it? ", engine.default_generation(max_new_tokens=2))
    assert checked == [" What is it? "] and len(decoded) == 1
    assert query.question == "What is it?"


def test_a_refused_question_costs_no_decoding(engine, monkeypatch) -> None:
    decoded = _counting(monkeypatch, images, "prepare")
    with pytest.raises(QuestionError, match="limit is"):
        engine.build_query([_png()], "x" * (engine.settings.max_question_chars + 1))
    with pytest.raises(QuestionError, match="at most"):
        engine.build_query([_png()] * (engine.settings.max_images + 1), "What is it?")
    assert decoded == []


def test_the_previewed_image_is_the_one_the_model_gets(engine, tmp_path: Path, monkeypatch) -> None:
    data = _png(96)
    # Prepared narrower than the engine would prepare it, so the answer shows which preparation it saw.
    previewed = images.prepare(data, max_width=40)
    decoded = _counting(monkeypatch, images, "prepare")
    request = AskRequest(session_id="0123456789ab", page="playground", question="What is it?",
                         images=(ImageUpload(data, "navy.png", previewed),),
                         generation=engine.default_generation(max_new_tokens=3))
    run = ask_and_record(engine, HistoryStore(tmp_path / "history.sqlite3"), request).run()
    assert decoded == []  # not decoded again on the way to the model
    assert run.answer.image_notes == previewed.notes == ("resized 96×64 → 40×27",)
    assert run.entry.image_notes == previewed.notes and run.entry.image_hashes == (previewed.sha256,)


def test_an_upload_without_a_preview_is_prepared_when_asked(engine, tmp_path: Path, monkeypatch) -> None:
    decoded = _counting(monkeypatch, images, "prepare")
    request = AskRequest(session_id="0123456789ab", page="playground", question="What is it?",
                         images=(ImageUpload(_png(), "navy.png"),), generation=engine.default_generation(max_new_tokens=2))
    run = ask_and_record(engine, HistoryStore(tmp_path / "history.sqlite3"), request).run()
    assert len(decoded) == 1 and run.entry.status == "answered"


def test_a_prepared_image_from_other_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="not prepared from its bytes"):
        ImageUpload(_png(96), "a.png", images.prepare(_png(50)))


def test_statuses_are_the_enums_of_core_statuses(engine) -> None:
    from core.serving.scheduler import Scheduler
    from core.statuses import RequestStatus, TraceOutcome
    from core.telemetry import markers

    scheduler, finished = Scheduler(engine.backend), []
    scheduler.add_listener(finished.append)
    try:
        ticket = scheduler.submit(engine.build_query([_png()], "What is it?", engine.default_generation(max_new_tokens=2)))
        assert ticket.status in (RequestStatus.QUEUED, RequestStatus.RUNNING)
        ticket.collect()
    finally:
        scheduler.close()
    assert ticket.status is RequestStatus.DONE and [r.status for r in finished] == [RequestStatus.DONE]
    trace = next(t for t in reversed(markers.traces()) if t.question == "What is it?")
    assert trace.outcome is TraceOutcome.ANSWERED and trace.outcome == "answered"  # stored and shown as before
