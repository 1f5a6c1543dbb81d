"""Several prompts in ONE generate() call, for transformers VLMs (the Compare page).

Why one call: decoding is bound by reading the weights, so 4 rows cost about what 1 row costs; 4
questions answered one after another cost 4 times as much.

Decisions:
- Left padding (`padding_side="left"`): every row's last prompt token sits at the same position, so the
  first new token of every row is read off the same column; the attention mask hides the pads and
  generate() derives position ids from it. Greedy answers are token for token those of the prompt alone.
- Rows may carry different images (one template across several images). When every row carries the
  same images, they are encoded once: on LLaVA-layout models (pixel_values hold one row per image and the
  processor gives nothing else per image) the model's `get_image_features` is wrapped for the call so
  the vision tower runs on the first prompt's images only and its features are reused for every row.
  Other layouts (Qwen2-VL's flattened patches with grid sizes, ...) still run as one batched call, with
  one encoding per row.
- Per-row timings: preprocess, vision and prefill are shared by all rows (the stage clock's readings, as
  for a single answer); a row's decode ends when it produced its end-of-sequence token (or the last token,
  for rows cut at max_new_tokens), so a short answer in a batch reports its own decode time, not the
  longest row's. The Answers are built where every backend's are (answer_builder.py).
- It runs on the backend's LoadedModel (runtime.py): the model, its processor and its generation lock, so
  a batch and a single answer never run generate() at the same time.
- Beam search and sampling work too (sampling draws differ from single answers: one random stream).
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from transformers import StoppingCriteria

from core.backends import batched_fast, encoding
from core.backends.answer_builder import Generated, build_answer
from core.backends.runtime import LoadedModel
from core.backends.stage_clocks import find_vision_module
from core.backends.token_streaming import CancelCriteria
from core.errors import QuestionError
from core.records import Answer, GenerationSettings, Query
from core.telemetry import markers

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from core.models.fast_decode import FastDecoder

_PER_IMAGE_KEYS = {"input_ids", "attention_mask", "pixel_values"}  # anything else: not the LLaVA layout


class RowClock(StoppingCriteria):
    """Never stops generation itself: tells the stage clock about the first new token, notes when each row ended."""

    def __init__(self, eos_ids: set[int], rows: int, marks: markers.QueryClock) -> None:
        self.eos_ids = sorted(eos_ids)
        self.ended_at: list[float | None] = [None] * rows
        self.marks = marks
        self._eos: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        import torch

        now = time.perf_counter()
        self.marks.first_token()  # only the first call counts
        if self.eos_ids:
            if self._eos is None:
                self._eos = torch.tensor(self.eos_ids, device=input_ids.device)
            ended = torch.isin(input_ids[:, -1], self._eos).tolist()
            for row, is_end in enumerate(ended):
                if is_end and self.ended_at[row] is None:
                    self.ended_at[row] = now
        stop = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return cast("torch.BoolTensor", stop)  # torch's stubs type every tensor factory as plain Tensor


def release_memory() -> None:
    """What the scheduler does after each request: the batch's cache and activations go back to the GPU, so
    the next admission check (free memory as NVML sees it) is not fooled by PyTorch's cached blocks."""
    import torch

    gc.collect(1)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def generate_kwargs(s: GenerationSettings, min_new_tokens: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "do_sample": s.do_sample, "num_beams": s.num_beams,
                              "repetition_penalty": s.repetition_penalty}
    if s.do_sample:
        kwargs.update(temperature=s.temperature, top_p=s.top_p)
    if min_new_tokens:
        kwargs["min_new_tokens"] = min(min_new_tokens, s.max_new_tokens)
    return kwargs


def check_settings(queries: Sequence[Query]) -> None:
    if not queries:
        raise QuestionError("There is nothing to answer: no prompt was given.")
    if any(query.settings != queries[0].settings for query in queries[1:]):
        raise QuestionError("A batched call answers prompts with the same generation settings.")


def _encode_once(inner: Any, rows: int) -> Callable[..., Any]:
    """`inner.get_image_features`, but run on the first row's images only and repeated for every row."""
    original = inner.get_image_features

    @functools.wraps(original)  # generate() inspects its signature to pick the arguments it passes
    def once(pixel_values: Any, *args: Any, **kwargs: Any) -> Any:
        per_row = pixel_values.shape[0] // rows
        output = original(pixel_values[:per_row], *args, **kwargs)
        features = getattr(output, "pooler_output", output)
        if isinstance(features, (list, tuple)):
            repeated: Any = list(features) * rows
        else:  # one tensor, a row per image
            repeated = features.repeat(rows, *([1] * (features.dim() - 1)))
        if hasattr(output, "pooler_output"):
            output.pooler_output = repeated
            return output
        return repeated

    return once


def _eos_ids(model: PreTrainedModel) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def answer_batch(loaded: LoadedModel, queries: Sequence[Query], *, min_new_tokens: int = 0,
                 cancel: threading.Event | None = None,
                 fast: FastDecoder | None = None) -> list[tuple[Answer, tuple[int, ...]]]:
    """Answer queries that share their generation settings in one generate() call, in the given order.

    Returns, per query, its Answer and its new token ids (up to and including the end-of-sequence token).
    `min_new_tokens` forces answers to a fixed length (benchmarks); `cancel` stops every row at the next token.
    With `fast` (the loaded fast decoder) a greedy batch that fits its rows decodes there (batched_fast.py).
    """
    import torch

    check_settings(queries)
    model, processor = loaded.model, loaded.processor
    rows, settings = len(queries), queries[0].settings
    prepare_s = sum(p.prepare_s for p in {id(p): p for q in queries for p in q.images}.values())
    started = time.perf_counter()
    if fast is not None and batched_fast.fits(fast, queries):
        label = Query(queries[0].images, f"[{rows} prompts decoded together] {queries[0].question}", settings)
        marks = markers.QueryClock(loaded.name, label, prepare_s + time.perf_counter() - started)
        try:
            return batched_fast.answer_rows(loaded, fast, queries, _eos_ids(model), min_new_tokens=min_new_tokens,
                                            cancel=cancel, marks=marks)
        except OverflowError:  # a prompt too long for the fast path's cache: one generate() call as before
            started = time.perf_counter()
    cpu_inputs, prompt_tokens, _image_tokens = encoding.encode_rows(processor, model, queries)
    label = Query(queries[0].images, f"[{rows} prompts in one call] {queries[0].question}", settings)
    marks = markers.QueryClock(loaded.name, label, prepare_s + time.perf_counter() - started)
    inputs = encoding.to_device(cpu_inputs, model)
    width = int(inputs["input_ids"].shape[1])
    marks.preprocess_done()
    eos_ids = _eos_ids(model)
    clock = RowClock(eos_ids, rows, marks)
    inner: Any = getattr(model, "model", None)
    share_vision = (rows > 1 and batched_fast.same_images(queries) and set(inputs.keys()) <= _PER_IMAGE_KEYS
                    and callable(getattr(inner, "get_image_features", None)))
    with loaded.lock:  # one generate() at a time on this model, single answers included
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        shadowed = None
        if share_vision:
            shadowed = vars(inner).get("get_image_features")
            inner.get_image_features = _encode_once(inner, rows)
        try:
            with marks.generating(find_vision_module(model), lambda: cancel is not None and cancel.is_set()), \
                    torch.no_grad():
                output = model.generate(**inputs, **generate_kwargs(settings, min_new_tokens),
                                        stopping_criteria=[CancelCriteria(cancel or threading.Event()), clock])
        finally:
            if share_vision:
                del inner.get_image_features  # the class's method shows through again
                if shadowed is not None:
                    inner.get_image_features = shadowed
    cancelled = cancel is not None and cancel.is_set()
    rows_ids = output[:, width:].tolist()
    del output, inputs, cpu_inputs
    release_memory()
    readings = marks.readings()
    results = []
    for row, query in enumerate(queries):
        new_ids = rows_ids[row]
        cut = next((i for i, token in enumerate(new_ids) if token in eos_ids), None)
        if cut is not None:
            new_ids = new_ids[: cut + 1]
        generated = Generated(processor.decode(new_ids, skip_special_tokens=True), prompt_tokens[row], len(new_ids),
                              hit_limit=cut is None and len(new_ids) >= settings.max_new_tokens,
                              cancelled=cancelled and cut is None)
        row_clock = dataclasses.replace(readings, ended=clock.ended_at[row] or readings.ended)
        results.append((build_answer(query, generated, row_clock, model=loaded.name), tuple(new_ids)))
    return results
