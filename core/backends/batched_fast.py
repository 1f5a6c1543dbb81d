"""Compare's prompts on the fast decode path: each prompt prefilled on its own, then all decoded together in the
fast path's compiled step (core/models/fast_decode_rows.py). Used by answer_batch (batched.py) for greedy,
single-beam batches that fit the decoder's rows; everything else keeps the one-generate() path.

Prefill is per row, unpadded, so each row's answer is token for token its single answer. When every prompt
carries the same images, they are processed once and encoded once: for the call, the processor's image
`preprocess` and the model's `get_image_features` are wrapped to hand the first row's result to every later
row (same images, same arguments, same result). The image processing was the larger cost on the H200
(tens of ms per row, on the CPU, before any row decodes); the vision tower rarely runs for a later row at all,
since a row sharing the first one's prefix copies its cache (shared_prefix.py).
`min_new_tokens` (benchmarks only) is honoured by ignoring end-of-sequence tokens altogether.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.backends import encoding
from core.backends.answer_builder import Generated, build_answer
from core.backends.runtime import LoadedModel
from core.backends.stage_clocks import find_vision_module
from core.records import Answer, Query
from core.telemetry import markers

if TYPE_CHECKING:
    from core.models.fast_decode import FastDecoder


def fits(fast: FastDecoder | None, queries: Sequence[Query]) -> bool:
    s = queries[0].settings
    return fast is not None and not s.do_sample and s.num_beams == 1 and len(queries) <= fast.rows


def same_images(queries: Sequence[Query]) -> bool:
    first = [p.sha256 for p in queries[0].images]
    return bool(first) and all([p.sha256 for p in q.images] == first for q in queries[1:])


@contextmanager
def _first_result_reused(owner: Any, name: str, reuse: bool) -> Iterator[None]:
    """While open, `owner.<name>(...)` runs once and every later call gets (a shallow copy of) the first call's
    result: the rows carry the same images. The instance attribute shadows the class's method, then goes."""
    original = getattr(owner, name, None)
    if not reuse or not callable(original):
        yield
        return
    memo: list[Any] = []

    @functools.wraps(original)  # the caller may inspect its signature
    def once(*args: Any, **kwargs: Any) -> Any:
        if not memo:
            memo.append(original(*args, **kwargs))
        return copy.copy(memo[0]) if isinstance(memo[0], Mapping) else memo[0]  # a processor may pop keys

    shadowed = vars(owner).get(name)
    setattr(owner, name, once)
    try:
        yield
    finally:
        delattr(owner, name)  # the class's method shows through again
        if shadowed is not None:
            setattr(owner, name, shadowed)


def answer_rows(loaded: LoadedModel, fast: FastDecoder, queries: Sequence[Query], eos_ids: set[int], *,
                min_new_tokens: int, cancel: threading.Event | None,
                marks: markers.QueryClock) -> list[tuple[Answer, tuple[int, ...]]]:
    from core.models.fast_decode_rows import generate_rows

    model, processor, settings = loaded.model, loaded.processor, queries[0].settings
    prompts: list[dict[str, Any]] = []
    prompt_tokens: list[int] = []
    reuse = len(queries) > 1 and same_images(queries)
    with _first_result_reused(getattr(processor, "image_processor", None), "preprocess", reuse):
        for query in queries:
            cpu_inputs, counts, _ = encoding.encode_rows(processor, model, [query])
            prompts.append(dict(encoding.to_device(cpu_inputs, model)))
            prompt_tokens.append(counts[0])
    if max(prompt_tokens) + settings.max_new_tokens > fast.max_len:
        raise OverflowError("a prompt does not fit the fast path's cache")  # answer_batch falls back
    marks.preprocess_done()
    stop_on = set() if min_new_tokens else eos_ids

    def stopped() -> bool:
        return cancel is not None and cancel.is_set()

    vision_once = _first_result_reused(getattr(model, "model", None), "get_image_features", reuse)
    with loaded.lock, marks.generating(find_vision_module(model), stopped), vision_once:
        rows = generate_rows(fast, prompts, settings.max_new_tokens, settings.repetition_penalty, stop_on,
                             should_stop=stopped, on_prefilled=marks.first_token)
    cancelled = cancel is not None and cancel.is_set()
    readings = marks.readings()
    results = []
    for query, prompt_length, row in zip(queries, prompt_tokens, rows):
        new_ids = list(row.new_ids)
        ended = bool(new_ids) and new_ids[-1] in eos_ids
        generated = Generated(processor.decode(new_ids, skip_special_tokens=True), prompt_length, len(new_ids),
                              hit_limit=not ended and len(new_ids) >= settings.max_new_tokens,
                              cancelled=cancelled and not ended)
        results.append((build_answer(query, generated, dataclasses.replace(readings, ended=row.ended_at),
                                     model=loaded.name), tuple(new_ids)))
    return results
