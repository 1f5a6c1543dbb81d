"""Backend for InternLM-XComposer2.5 on Loupe's own implementation (core/models/xcomposer/): no remote code.

The folder is read as published (config.json, weights under their published names, tokenizer.model); its
.py files are never imported, so `trust_remote_code` is not needed. Everything else is as for native models:
- the pre-flight check plans it (CPU in float32, or the GPUs in bf16 with the plan's device map: vision,
  projector and embeddings on GPU0, layers split, norm and output with the last layers), with load progress;
- `encode` tokenizes the chat prompt and runs the HD transform once, on the CPU: admission gets the real
  prompt and image token counts; the pixels wait in the queue on the CPU;
- `stream` runs vision (CLIP + projector: the stage clock's "vision") and the prompt, then decodes through
  the fast path (greedy, one answer, decoder on one device) or transformers' generate(); streaming, cancel,
  stage timings and per-GPU peaks as in the transformers backend, the Answer from the one answer builder;
- history: earlier turns of `query.history` become chat turns (`takes_history`); video arrives as one tiled
  image (core/inputs/video.py), so `takes_video`.
One generation at a time per model (a lock), as for every local backend.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.backends.answer_builder import Generated, build_answer
from core.backends.base import EncodedQuery, refuse_what_it_cannot_take
from core.backends.runtime import FAST_DECODE_NOTE, give_back_gpu_memory
from core.backends.stage_clocks import FirstTokenMark
from core.backends.streaming import AnswerStream, GenerationThread
from core.backends.token_streaming import CancelCriteria, TimedStreamer
from core.errors import ModelError
from core.models import load_progress, model_shape, preflight
from core.models.load_progress import LoadProgress, ProgressCallback
from core.models.model_source import ModelSource
from core.records import Answer, ModelCard, Query
from core.settings import Settings
from core.telemetry import markers

if TYPE_CHECKING:
    from core.models.xcomposer.answering import XComposerInputs
    from core.models.xcomposer.fast_path import XComposerFastDecoder
    from core.models.xcomposer.model import XComposerModel
    from core.models.xcomposer.tokenizer import XComposerTokenizer

FAST_CACHE_TOKENS = 4096  # the fast path's static cache: a 1280×720 photo (2,861 tokens) + question + answer

# With images the prompt goes to generate() as embeddings only, so the penalty sees only new tokens: that is
# the model's own chat() behaviour (see core/models/xcomposer/answering.py), not a mistake to warn about.
warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")


def create_xcomposer(source: ModelSource, settings: Settings, *, reclaim: dict[int, int] | None = None) -> XComposerBackend:
    """Check the config, run the pre-flight check, then build the (unloaded) backend."""
    config = model_shape.read_config(source.path)
    if not model_shape.is_xcomposer(config):
        raise ModelError(f"backend = 'xcomposer' but {source.name} is a '{config.get('model_type', '?')}' model; "
                         "use backend = 'auto' (or 'transformers').")
    clearance = preflight.check(source.path, settings, name=source.name, reclaim=reclaim)
    return XComposerBackend(source, clearance, max_images=settings.max_images,
                            stream_timeout_s=settings.stream_timeout_s, fast_decode=settings.fast_decode,
                            decode_attention=settings.decode_attention)


def _turns(query: Query) -> tuple[tuple[str, str], ...]:
    return tuple((turn.question, turn.answer) for turn in query.history)


class XComposerBackend:
    """Loads an XComposer2.5 folder with Loupe's implementation and streams answers."""

    name = "xcomposer"
    can_stream = True
    can_batch = True  # several prompts about the same images in one generate() call (compare)
    takes_history = True
    max_in_flight = 1  # one generation at a time on the local GPU(s), as for every local model
    takes_video = True
    max_images = 4

    def __init__(self, source: ModelSource, clearance: preflight.Clearance, *, max_images: int = 4,
                 stream_timeout_s: float = 120.0, fast_decode: bool = True, decode_attention: str = "auto") -> None:
        self.source = source
        self.clearance = clearance
        self.has_local_gpus = clearance.device == "cuda"
        self.max_images = max_images
        self.fast_decode = fast_decode
        self.decode_attention = decode_attention
        self._timeout = stream_timeout_s
        self._lock = threading.Lock()
        self.model: XComposerModel | None = None
        self.tokenizer: XComposerTokenizer | None = None
        self.fast_decoder: XComposerFastDecoder | None = None
        self.fast_status = "off"
        self.skipped: list[str] = []
        self.load_s = 0.0

    # -- load ------------------------------------------------------------------------------------
    def load(self, progress: ProgressCallback | None = None) -> None:
        import torch

        from core.models.xcomposer.model import load_model
        from core.models.xcomposer.tokenizer import XComposerTokenizer

        report = progress or (lambda _p: None)
        started = time.perf_counter()
        path = self.source.path
        dtype = self.clearance.dtype
        report(LoadProgress(0.05, f"Reading the XComposer2.5 config and tokenizer from {path} (no remote code)"))
        failure = ""
        try:
            self.tokenizer = XComposerTokenizer(path)
            report(LoadProgress(0.2, f"Loading weights ({dtype}, sdpa) to {self.clearance.summary}"))
            self.model, self.skipped = load_progress.run_watched(
                lambda: load_model(path, dtype=getattr(torch, dtype), device_map=self.clearance.device_map,
                                   device=self.clearance.device),
                folder=path, plan=self.clearance.plan, report=report,
            )
        except Exception as exc:  # noqa: BLE001 - whatever failed, nothing may stay half-loaded on a GPU
            failure = load_progress.describe_failure(exc)
        if failure:  # freed outside the except block: its traceback would keep the half-built model alive
            self.unload()
            raise ModelError(f"The XComposer model in {path} could not be loaded: {failure}")
        if self.fast_decode:
            self._prepare_fast_decoder(report)
        self.load_s = time.perf_counter() - started
        report(LoadProgress(1.0, f"Model ready in {self.load_s:.1f} s"))

    def _prepare_fast_decoder(self, report: ProgressCallback) -> None:
        from core.models import fast_decode_support
        from core.models.decode_attention import DecodeAttention
        from core.models.xcomposer.fast_path import XComposerFastDecoder
        from core.models.xcomposer.model import as_decoder_view

        assert self.model is not None
        status = fast_decode_support.check(as_decoder_view(self.model))
        self.fast_status = status.reason
        if not status.enabled:
            return
        length = fast_decode_support.cache_length(self.model.spec.max_positions, FAST_CACHE_TOKENS)
        model = self.model
        self.fast_decoder, self.fast_status = fast_decode_support.build_and_warm(
            lambda attention: XComposerFastDecoder(model, length, attention=attention),
            DecodeAttention(self.decode_attention), status.reason, lambda message: report(LoadProgress(0.95, message)))

    def unload(self) -> None:
        if self.fast_decoder is not None:
            self.fast_decoder.close()
        self.fast_decoder, self.model, self.tokenizer = None, None, None
        give_back_gpu_memory()  # the one way a model's GPU memory goes back (core/backends/runtime.py)

    def describe(self) -> ModelCard:
        fast = FAST_DECODE_NOTE(status=self.fast_status)
        notes = (*self.clearance.notes, fast.text,
                 *((f"weights not part of XComposer2.5 skipped: {len(self.skipped)}",) if self.skipped else ()))
        return ModelCard(
            name=self.source.name, backend=self.name, dtype=self.clearance.dtype, attn_implementation="sdpa",
            device=self.clearance.device, is_demo=False, device_map_summary=self.clearance.summary,
            notes=tuple(dict.fromkeys(notes)), note_messages=(*self.clearance.note_messages, fast),
        )

    # -- answer ----------------------------------------------------------------------------------
    def _loaded(self) -> tuple[XComposerModel, XComposerTokenizer]:
        if self.model is None or self.tokenizer is None:
            raise ModelError("The model is not loaded yet.")
        return self.model, self.tokenizer

    def encode(self, query: Query) -> EncodedQuery:
        """Tokens and HD pixels, once, on the CPU: the exact prompt and image token counts for admission."""
        from core.models.xcomposer.answering import encode

        refuse_what_it_cannot_take(self, query)
        _model, tokenizer = self._loaded()
        started = time.perf_counter()
        inputs = encode(tokenizer, query.question, [p.image for p in query.images], _turns(query))
        return EncodedQuery(query, inputs, inputs.prompt_tokens, sum(inputs.image_tokens),
                            time.perf_counter() - started)

    def _use_fast_decoder(self, query: Query, prompt_tokens: int) -> bool:
        s = query.settings
        return (self.fast_decoder is not None and not s.do_sample and s.num_beams == 1
                and prompt_tokens + s.max_new_tokens <= self.fast_decoder.max_len)

    def stream(self, encoded: EncodedQuery) -> AnswerStream:
        import torch

        from core.backends import batched
        from core.models.xcomposer import answering

        model, tokenizer = self._loaded()
        query = encoded.query
        inputs: XComposerInputs = encoded.inputs
        marks = markers.QueryClock(self.source.name, query, sum(p.prepare_s for p in query.images) + encoded.encode_s)
        marks.preprocess_done()
        streamer = TimedStreamer(tokenizer, self._timeout)
        cancel = threading.Event()
        beams = query.settings.num_beams > 1
        stage_mark = FirstTokenMark(marks, cancel)
        stop_ids = set(tokenizer.stop_ids)

        def target() -> list[int]:
            with self._lock:  # one generation at a time on this model
                if query.settings.seed is not None:
                    torch.manual_seed(query.settings.seed)
                with marks.generating(model.image_encoder, lambda: stage_mark.saw_cancel):
                    if self._use_fast_decoder(query, inputs.prompt_tokens):
                        assert self.fast_decoder is not None
                        new_ids = self.fast_decoder.answer(
                            inputs, query.settings.max_new_tokens, query.settings.repetition_penalty, stop_ids,
                            streamer=streamer, should_stop=stage_mark.after_token)
                    else:
                        ids, _ = answering.generate(
                            model, inputs, stop_ids, **batched.generate_kwargs(query.settings, 0),
                            streamer=None if beams else streamer,
                            stopping_criteria=[CancelCriteria(cancel), stage_mark])
                        new_ids = ids[0].tolist()
            if beams:  # no streaming with beam search: push the whole answer as one piece
                streamer.on_finalized_text(tokenizer.decode(new_ids), stream_end=True)
            return new_ids

        def finish(thread: GenerationThread) -> Answer:
            readings = marks.readings()
            if beams:  # its answer arrives in one piece: like the analyst, the Answer sees no decode stage
                readings = dataclasses.replace(readings, first_token=None)
            new_ids: list[int] = list(thread.result or [])
            while new_ids and new_ids[-1] == model.spec.pad_id and model.spec.pad_id not in stop_ids:
                new_ids.pop()
            hit_limit = len(new_ids) >= query.settings.max_new_tokens and new_ids[-1] not in stop_ids
            generated = Generated(tokenizer.decode(new_ids), inputs.prompt_tokens, len(new_ids), hit_limit,
                                  stage_mark.saw_cancel)
            return build_answer(query, generated, readings, model=self.source.name)

        return AnswerStream(GenerationThread(target, streamer).start(), cancel, finish)


    def answer_batch(self, queries: Sequence[Query], *, min_new_tokens: int = 0,
                     cancel: threading.Event | None = None) -> list[tuple[Answer, tuple[int, ...]]]:
        """Several prompts in ONE generate() call, one vision encoding when their images are the same; per query
        its Answer and new token ids (through the end token). As core/backends/batched.py does for
        transformers models, whose row clock, settings check and memory release it shares."""
        import torch

        from core.backends import batched
        from core.models.xcomposer import answering

        batched.check_settings(queries)
        model, tokenizer = self._loaded()
        settings = queries[0].settings
        started = time.perf_counter()
        rows = [self.encode(q).inputs for q in queries]
        prepare_s = sum(p.prepare_s for p in {id(p): p for q in queries for p in q.images}.values())
        label = Query(queries[0].images, f"[{len(queries)} prompts in one call] {queries[0].question}", settings)
        marks = markers.QueryClock(self.source.name, label, prepare_s + time.perf_counter() - started)
        marks.preprocess_done()
        stop_ids = set(tokenizer.stop_ids)
        clock = batched.RowClock(stop_ids, len(queries), marks)
        with self._lock:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with marks.generating(model.image_encoder, lambda: cancel is not None and cancel.is_set()):
                output = answering.generate_rows(
                    model, rows, stop_ids, **batched.generate_kwargs(settings, min_new_tokens),
                    stopping_criteria=[CancelCriteria(cancel or threading.Event()), clock])
        cancelled = cancel is not None and cancel.is_set()
        rows_ids = output.tolist()
        del output
        batched.release_memory()
        readings = marks.readings()
        results = []
        for row, query in enumerate(queries):
            new_ids = rows_ids[row]
            cut = next((i for i, token in enumerate(new_ids) if token in stop_ids), None)
            new_ids = new_ids[: cut + 1] if cut is not None else new_ids
            generated = Generated(tokenizer.decode(new_ids), rows[row].prompt_tokens, len(new_ids),
                                  hit_limit=cut is None and len(new_ids) >= settings.max_new_tokens,
                                  cancelled=cancelled and cut is None)
            row_clock = dataclasses.replace(readings, ended=clock.ended_at[row] or readings.ended)
            results.append((build_answer(query, generated, row_clock, model=self.source.name), tuple(new_ids)))
        return results
