"""Stage markers on the real demo model: every query leaves a trace with its four stages in order."""
from __future__ import annotations

import time

import pytest
from PIL import Image

from core.backends.stage_clocks import find_vision_module
from core.errors import GenerationError
from core.records import GenerationSettings
from core.telemetry import markers
from core.telemetry.markers import STAGES
from tests.image_factory import encode


def _png() -> bytes:
    return encode(Image.new("RGB", (300, 200), "navy"), "PNG")


def _ask(engine, max_new_tokens: int = 12):
    query = engine.build_query([_png()], "What is this?", GenerationSettings(max_new_tokens=max_new_tokens))
    return query, engine.backend.stream(engine.backend.encode(query))


def test_answer_leaves_four_stages_in_order(engine) -> None:
    before = time.time()
    query, stream = _ask(engine)
    answer = stream.collect()
    trace = markers.for_query(query)
    assert trace is not None and trace.outcome == "answered"
    assert trace.model == "demo-llava-v2" and trace.question == "What is this?"
    assert [s.stage for s in trace.stages] == list(STAGES)
    assert trace.end is not None and before - 5 <= trace.start <= trace.end <= time.time()
    edges = [t for s in trace.stages for t in (s.start, s.end)]
    assert edges == sorted(edges), "stages must follow each other without overlapping"
    assert trace.stages[0].start == pytest.approx(trace.start) and trace.stages[-1].end == pytest.approx(trace.end)
    by_stage = {s.stage: s for s in trace.stages}
    assert by_stage["vision"].end > by_stage["vision"].start  # the demo model's CLIP tower really ran
    assert by_stage["decode"].end > by_stage["decode"].start  # 12 tokens take time to decode
    for stage in trace.stages:
        assert stage.peak_memory_gb["cpu"] > 0.05
    # The answer's own memory figures are the stages' (the whole generation's peak on each device).
    assert answer.peak_memory_gb == trace.stages[-1].peak_memory_gb | {
        k: max(s.peak_memory_gb.get(k, 0.0) for s in trace.stages[1:]) for k in answer.peak_memory_gb if k != "cpu"}
    assert trace in markers.traces(since=before - 5)


def test_a_waiting_query_shows_as_running_then_cancelled(engine) -> None:
    """Holding the model's lock makes the query wait: its trace is visible, running, preprocess done."""
    with engine.backend._lock:
        query, stream = _ask(engine, max_new_tokens=200)
        running = markers.for_query(query)
        assert running is not None and running.outcome == "running" and running.end is None
        assert [s.stage for s in running.stages] == ["preprocess"]
        assert running in markers.traces()
        stream.cancel()  # cancelled while waiting: it stops at its first token
    answer = stream.collect()
    trace = markers.for_query(query)
    assert trace.outcome == "cancelled" and answer.truncated and answer.output_tokens == 1
    assert [s.stage for s in trace.stages] == list(STAGES)


def test_an_answer_that_ends_normally_is_not_marked_cancelled(engine) -> None:
    """The reader sets the cancel event when it stops reading, after the last token: that is no cancel."""
    for _ in range(3):
        query, stream = _ask(engine, max_new_tokens=4)
        stream.collect()
        assert markers.for_query(query).outcome == "answered"


def test_a_failed_generation_leaves_a_failed_trace(engine) -> None:
    vision = find_vision_module(engine.backend.model)

    def explode(*_: object) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = vision.register_forward_hook(explode)
    try:
        query, stream = _ask(engine)
        with pytest.raises(GenerationError):
            stream.collect()
    finally:
        handle.remove()
    trace = markers.for_query(query)
    assert trace.outcome == "failed" and trace.end is not None
    assert [s.stage for s in trace.stages] == list(STAGES)
    vision_mark = trace.stages[1]
    assert vision_mark.end > vision_mark.start  # the band ends where it failed, inside the vision tower
    assert engine.ask([_png()], "hi", GenerationSettings(max_new_tokens=2)).collect().output_tokens == 2


def test_traces_window_and_clear(engine) -> None:
    query, stream = _ask(engine, max_new_tokens=2)
    stream.collect()
    trace = markers.for_query(query)
    assert trace in markers.traces(since=trace.end - 1)
    assert trace not in markers.traces(since=trace.end + 1)
    markers.clear()
    assert markers.for_query(query) is None and trace not in markers.traces()


def test_beam_search_is_marked_too(engine) -> None:
    """No streamer with beams: the first-token boundary comes from the stopping criteria, step one."""
    query = engine.build_query([_png()], "hi", GenerationSettings(max_new_tokens=6, num_beams=2))
    engine.backend.stream(engine.backend.encode(query)).collect()
    trace = markers.for_query(query)
    assert trace.outcome == "answered" and [s.stage for s in trace.stages] == list(STAGES)
    assert trace.stages[-1].end > trace.stages[-1].start
