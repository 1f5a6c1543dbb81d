"""The one answer builder: every backend's Answer fields computed from what it generated and the clock's readings."""
from __future__ import annotations

import pytest
from PIL import Image

from core.backends.answer_builder import Generated, build_answer, stage_timings
from core.records import GenerationSettings, PreparedImage, Query
from core.telemetry.markers import StageReadings


def _query() -> Query:
    image = PreparedImage(Image.new("RGB", (8, 8)), ("resized to 8×8",), "PNG", (16, 16), "", 0.25)
    return Query((image,), "What is this?", GenerationSettings(max_new_tokens=5))


def _clock(first_token: float | None = 13.0) -> StageReadings:
    # prepared 0.5 s before the clock opened at 10; inputs on the device at 10.5; generation from 11 (after
    # waiting behind another question), 0.5 s of it in the vision tower; first token at 13, last at 15.
    return StageReadings(prepared_s=0.5, started=10.0, preprocessed=10.5, generation_started=11.0, vision_s=0.5,
                         first_token=first_token, ended=15.0, peaks={"cuda:0": 2.5, "cpu": 1.0})


def test_stages_tokens_per_second_and_total() -> None:
    answer = build_answer(_query(), Generated("A cat.", 40, 5, hit_limit=False, cancelled=False), _clock(),
                          model="demo")
    t = answer.timings
    assert (t.preprocess, t.vision, t.prefill, t.decode, t.total) == pytest.approx((1.0, 0.5, 1.5, 2.0, 5.5))
    assert answer.tokens_per_s == pytest.approx((5 - 1) / 2.0)
    assert (answer.input_tokens, answer.output_tokens, answer.truncated) == (40, 5, False)
    assert answer.peak_memory_gb == {"cuda:0": 2.5, "cpu": 1.0} and answer.image_notes == ("resized to 8×8",)
    assert answer.model == "demo" and answer.settings.max_new_tokens == 5


def test_an_answer_cut_at_the_limit_is_trimmed_to_its_last_sentence() -> None:
    cut = build_answer(_query(), Generated(" A cat. It sits on", 40, 5, hit_limit=True, cancelled=False), _clock(),
                       model="demo")
    assert (cut.text, cut.truncated) == ("A cat.", True)
    cancelled = build_answer(_query(), Generated("A cat. It sits on", 40, 5, hit_limit=False, cancelled=True),
                             _clock(), model="demo")
    assert (cancelled.text, cancelled.truncated) == ("A cat. It sits on", True)  # only the limit trims


def test_no_first_token_means_prefill_to_the_end_and_no_decode_rate() -> None:
    t = stage_timings(_clock(first_token=None))
    assert (t.prefill, t.decode) == pytest.approx((3.5, 0.0))
    one = build_answer(_query(), Generated("A", 40, 1, hit_limit=False, cancelled=False), _clock(), model="demo")
    assert one.tokens_per_s == 0.0  # one token: no interval to divide by
