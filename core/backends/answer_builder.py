"""The one place an Answer is built: every backend hands over what it generated and the clock's readings.

Backends yield text pieces while generating; at the end each reports raw facts (`Generated`: the decoded
text, token counts, whether it stopped at max_new_tokens or was cancelled) and the stage clock's readings
(core/telemetry/markers.py `StageReadings`, the same numbers the memory chart's bands show). From those,
and only here:
- preprocess = image preparation + encoding + copying the inputs to the device;
- vision = the vision tower's forwards (hooks, CUDA-synchronised);
- prefill = start of generation to the first token, minus vision (to the end when no token came);
- decode = first token to last; tokens/s = (output tokens − 1) / decode seconds;
- total = wall time from image preparation to the last token (the scheduler then adds the time the request
  waited in its queue, as its own stage `queue`, to total: core/serving/ticket.py);
- an answer cut at max_new_tokens is trimmed back to its last sentence end.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.records import Answer, Query, StageTimings
from core.telemetry.markers import StageReadings

SENTENCE_ENDS = "。！？.!?\n"


def trim_to_sentence_end(text: str) -> str:
    """Cut text back to its last sentence end (。！？.!? or a newline); unchanged if it has none."""
    cut = max(text.rfind(mark) for mark in SENTENCE_ENDS)
    return text[: cut + 1].rstrip() if cut >= 0 else text


@dataclass(frozen=True)
class Generated:
    """What a backend generated for one query, before any trimming."""

    text: str
    input_tokens: int
    output_tokens: int
    hit_limit: bool  # stopped because max_new_tokens was reached (the text is trimmed to a sentence end)
    cancelled: bool  # stopped early on the reader's request


def stage_timings(clock: StageReadings) -> StageTimings:
    """Seconds per stage from the clock's readings (see the module docstring)."""
    first = clock.first_token
    prefill_end = first if first is not None else clock.ended
    return StageTimings(
        preprocess=clock.prepared_s + (clock.preprocessed - clock.started),
        vision=clock.vision_s,
        prefill=max(0.0, prefill_end - clock.generation_started - clock.vision_s),
        decode=max(0.0, clock.ended - first) if first is not None else 0.0,
        total=clock.prepared_s + (clock.ended - clock.started),
    )


def build_answer(query: Query, generated: Generated, clock: StageReadings, *, model: str) -> Answer:
    """The Answer for `query` from what was generated and when (the one place its fields are computed)."""
    timings = stage_timings(clock)
    text = trim_to_sentence_end(generated.text) if generated.hit_limit else generated.text
    count = generated.output_tokens
    return Answer(
        text=text.strip(),
        truncated=generated.hit_limit or generated.cancelled,
        input_tokens=generated.input_tokens,
        output_tokens=count,
        tokens_per_s=(count - 1) / timings.decode if timings.decode > 0 and count > 1 else 0.0,
        timings=timings,
        peak_memory_gb=dict(clock.peaks),
        image_notes=tuple(note for image in query.images for note in image.notes),
        model=model,
        settings=query.settings,
    )
