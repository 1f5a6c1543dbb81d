"""The whole question path on the real demo model: no mocks, real tokens."""
from __future__ import annotations

import threading

import pytest
from PIL import Image

from core.backends.answer_builder import trim_to_sentence_end
from core.backends.stage_clocks import find_vision_module
from core.errors import GenerationError, ModelError, QuestionError
from core.models import model_source
from core.records import GenerationSettings
from core.serving.scheduler import Scheduler
from core.settings import load_settings
from core.telemetry import gpu_reader, markers
from tests.image_factory import encode, jpeg_with_orientation


def _png(size=(300, 200), colour="navy") -> bytes:
    return encode(Image.new("RGB", size, colour), "PNG")


def test_answer_streams_and_records_everything(engine) -> None:
    stream = engine.ask([jpeg_with_orientation(6)], "图中有什么？", engine.default_generation(max_new_tokens=24))
    pieces = list(stream)
    answer = stream.answer
    assert pieces and answer is not None
    assert answer.output_tokens == 24 and answer.truncated
    assert answer.input_tokens > 16  # 16 image tokens plus the chat-templated question
    t = answer.timings
    assert t.vision > 0 and t.prefill > 0 and t.decode > 0 and t.preprocess > 0
    assert t.total >= t.vision + t.prefill + t.decode
    assert answer.tokens_per_s > 0
    assert answer.peak_memory_gb["cpu"] > 0.05
    assert answer.image_notes == ("rotated 90° from EXIF (orientation 6)",)
    assert answer.model == "demo-llava-v2"


def test_model_card_says_the_fast_path_is_not_compiled_on_cpu(engine) -> None:
    notes = [n for n in engine.backend.describe().notes if n.startswith("fast decode:")]
    assert len(notes) == 1 and "not compiled (CPU)" in notes[0] and "ready in" in notes[0]


def test_greedy_is_reproducible_and_settings_travel(engine) -> None:
    settings = engine.default_generation(max_new_tokens=12)
    first = engine.ask([_png()], "What is this?", settings).collect()
    second = engine.ask([_png()], "What is this?", settings).collect()
    assert first.text == second.text
    assert first.settings == settings


def test_default_max_new_tokens_and_sentence_trim(engine) -> None:
    stream = engine.ask([_png()], "Describe the photo.")
    streamed = "".join(stream)  # what the reader saw arrive, before the cut
    answer = stream.answer
    assert answer.settings.max_new_tokens == 1024
    if answer.truncated:
        assert answer.output_tokens == 1024 and answer.text == trim_to_sentence_end(streamed.strip())
        if any(mark in streamed for mark in "。！？.!?\n"):
            assert len(answer.text) < len(streamed)


def test_sampling_with_seed_is_repeatable(engine) -> None:
    settings = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=0.9, top_p=0.9, seed=7)
    assert engine.ask([_png()], "hi", settings).text() == engine.ask([_png()], "hi", settings).text()


def test_beam_search_arrives_as_one_piece(engine) -> None:
    stream = engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=8, num_beams=2))
    assert len(list(stream)) <= 1
    assert stream.answer is not None and stream.answer.output_tokens <= 8


def test_several_images_in_order(engine) -> None:
    two = engine.ask([_png(colour="red"), _png(colour="blue")], "Compare them.", GenerationSettings(max_new_tokens=4))
    one = engine.ask([_png(colour="red")], "Compare them.", GenerationSettings(max_new_tokens=4))
    assert two.collect().input_tokens == one.collect().input_tokens + 16 + 1  # image tokens + newline


def test_too_many_images_refused_before_decoding(engine) -> None:
    with pytest.raises(QuestionError, match="at most 4"):
        engine.ask([b"not even an image"] * 5, "hi")


def test_question_too_long_refused(engine) -> None:
    with pytest.raises(QuestionError, match="201 characters"):
        engine.ask([_png()], "问" * 201)


def test_exception_in_generation_reaches_the_reader(engine) -> None:
    vision = find_vision_module(engine.backend.model)

    def explode(*_):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = vision.register_forward_hook(explode)
    try:
        with pytest.raises(GenerationError, match="ran out of memory"):
            engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=4)).collect()
    finally:
        handle.remove()
    assert engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=4)).collect().output_tokens == 4


def test_stalled_generation_times_out_and_is_cancelled(engine, monkeypatch) -> None:
    release = threading.Event()
    vision = find_vision_module(engine.backend.model)
    handle = vision.register_forward_hook(lambda *_: None if release.wait(30) else None)
    monkeypatch.setattr(engine.backend, "_timeout", 0.2)
    try:
        stream = engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=50))
        with pytest.raises(GenerationError, match="produced nothing"):
            stream.collect()
    finally:
        release.set()
        handle.remove()
        monkeypatch.undo()  # the follow-up question runs with the normal timeout
    stream._thread.join()
    after = engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=3)).collect()
    assert after.output_tokens == 3  # the model still answers
    new_tokens = stream._thread.result.shape[1] - after.input_tokens
    assert new_tokens <= 2, "the timed-out generation must have been cancelled, not run to 50 tokens"


def test_cancel_stops_early(engine) -> None:
    stream = engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=500))
    for _ in stream:
        stream.cancel()
    assert stream.answer is not None and stream.answer.truncated
    assert stream.answer.output_tokens < 500


@pytest.mark.parametrize(
    ("text", "expected"),
    [("第一句。第二句没有结", "第一句。"), ("One. Two! Three", "One. Two!"), ("line one\nline tw", "line one"),
     ("no end at all", "no end at all"), ("问题？答", "问题？")],
)
def test_trim_to_sentence_end(text: str, expected: str) -> None:
    assert trim_to_sentence_end(text) == expected


def test_model_not_found_is_typed(monkeypatch) -> None:
    monkeypatch.setenv("LOUPE_MODEL", "someone/not-cached-anywhere")
    with pytest.raises(ModelError, match="never downloads"):
        model_source.resolve(load_settings())


def test_the_answer_timings_are_the_stage_markers_readings(engine) -> None:
    """One stage clock: the memory chart's bands and the Answer's timings are the same numbers."""
    query = engine.build_query([_png()], "What is this?", GenerationSettings(max_new_tokens=8))
    answer = engine.backend.stream(engine.backend.encode(query)).collect()
    trace = markers.for_query(query)
    assert trace is not None and trace.end is not None
    band = {s.stage: s.end - s.start for s in trace.stages}
    t = answer.timings
    assert t.preprocess == pytest.approx(band["preprocess"], abs=1e-5)
    assert t.vision == pytest.approx(band["vision"], abs=1e-5) and t.vision > 0  # the tower ran once
    assert t.decode == pytest.approx(band["decode"], abs=1e-5) and t.decode > 0
    assert t.total == pytest.approx(trace.end - trace.start, abs=1e-5)


def test_one_vision_hook_and_one_peak_reset_per_stage_boundary(engine, monkeypatch) -> None:
    vision = find_vision_module(engine.backend.model)
    assert not vision._forward_pre_hooks and not vision._forward_hooks, "nothing stays hooked between queries"
    hooked: list[tuple[int, int]] = []
    handle = vision.register_forward_hook(
        lambda *_: hooked.append((len(vision._forward_pre_hooks), len(vision._forward_hooks))))
    resets: list[int] = []
    reset = gpu_reader.reset_peaks
    monkeypatch.setattr(gpu_reader, "reset_peaks", lambda: (resets.append(1), reset())[1])
    try:
        engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=4)).collect()
    finally:
        handle.remove()
    assert hooked == [(1, 2)]  # the stage clock's pair (this test's own hook is the second forward hook)
    assert len(resets) == 4  # generation start, vision start, vision end, first token: once each


def test_a_question_is_tokenized_once_on_its_way_through_the_queue(engine, monkeypatch) -> None:
    """Admission at submit, admission at serve and generation all use the backend's one encoding."""
    tokenizer_type = type(engine.backend.processor.tokenizer)
    calls: list[int] = []
    tokenize = tokenizer_type.__call__
    monkeypatch.setattr(tokenizer_type, "__call__", lambda self, *a, **k: (calls.append(1), tokenize(self, *a, **k))[1])
    sched = Scheduler(engine.backend)
    try:
        assert sched._admission is not None  # the demo model is checked (against RAM)
        ticket = sched.submit(engine.build_query([_png()], "What is this?", GenerationSettings(max_new_tokens=4)))
        assert ticket.collect().output_tokens == 4
    finally:
        sched.close()
    assert len(calls) == 1
    encoded = engine.backend.encode(engine.build_query([_png()], "What is this?"))
    assert encoded.image_tokens == 16 and encoded.prompt_tokens == ticket.answer.input_tokens
    est = sched._admission.estimate(encoded)
    assert (est.workload.prompt_tokens, est.workload.image_tokens) == (encoded.prompt_tokens, 16)  # exact, not estimated
