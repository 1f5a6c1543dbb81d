"""Backend for VLMs that transformers supports natively (LLaVA, Qwen2.5-VL, InternVL, SmolVLM, ...).

One generation at a time: a lock is held for the whole of generate(), so a second question waits for
the first instead of doubling the GPU memory (the scheduler adds fairness and queue positions on top).
Beam search (num_beams > 1) cannot stream in transformers: its answer arrives as one piece at the end.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.backends import encoding
from core.backends.answer_builder import Generated, build_answer
from core.backends.base import EncodedQuery, refuse_what_it_cannot_take
from core.backends.runtime import FAST_DECODE_NOTE, LoadedModel, choose_runtime, give_back_gpu_memory
from core.backends.stage_clocks import FirstTokenMark, find_vision_module
from core.backends.streaming import AnswerStream, GenerationThread
from core.backends.token_streaming import CancelCriteria, TimedStreamer
from core.errors import ModelError
from core.messages import Message
from core.models import load_progress
from core.models.load_progress import LoadProgress, ProgressCallback
from core.models.model_source import ModelSource
from core.records import Answer, ModelCard, Query, ShardPlan
from core.telemetry import markers

if TYPE_CHECKING:
    import torch

    from core.models.fast_decode import FastDecoder
    from core.models.fast_decode_batcher import ContinuousBatcher


class TransformersBackend:
    """Loads a model folder with AutoModelForImageTextToText + AutoProcessor and streams answers."""

    name = "transformers"
    can_stream = True
    can_batch = True
    max_images = 4
    takes_history = True  # earlier turns through the model's chat template (encoding.chat_prompt)
    # One generation at a time on the local GPU(s), until a fast decoder with several rows is built: then that
    # many greedy answers decode together (core/models/fast_decode_batcher.py).
    max_in_flight = 1
    takes_video = False  # a tiled video image is XComposer2.5's input; native VLMs take their own video inputs

    def __init__(
        self,
        source: ModelSource,
        *,
        device: str = "auto",
        device_map: dict[str, Any] | str | None = None,
        device_map_summary: str = "",
        max_images: int = 4,
        stream_timeout_s: float = 120.0,
        fast_decode: bool = True,
        fast_decode_rows: int = 1,
        decode_attention: str = "auto",
        plan: ShardPlan | None = None,
        notes: tuple[str, ...] = (),
        note_messages: tuple[Message, ...] = (),
    ) -> None:
        self.source = source
        self._plan = plan  # the pre-flight plan: load progress is reported against it
        self._notes, self._note_messages = notes, note_messages
        self.runtime = choose_runtime(device)
        self.has_local_gpus = self.runtime.device == "cuda"
        self.max_images = max_images
        self._device_map = device_map
        self._device_map_summary = device_map_summary
        self._timeout = stream_timeout_s
        self._lock = threading.Lock()
        self.model: Any = None
        self.processor: Any = None
        self.load_s = 0.0
        self.fast_decode = fast_decode
        self.fast_decode_rows = fast_decode_rows
        self.decode_attention = decode_attention
        self.fast_decoder: FastDecoder | None = None  # when the model allows it
        self.batcher: ContinuousBatcher | None = None  # when the fast decoder has several rows
        self.fast_status = "off"

    # -- load ------------------------------------------------------------------------------------
    def load(self, progress: ProgressCallback | None = None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        report = progress or (lambda _p: None)
        started = time.perf_counter()
        report(LoadProgress(0.05, f"Reading processor and tokenizer from {self.source.path}"))
        failure = ""
        try:
            self.processor = AutoProcessor.from_pretrained(self.source.path, local_files_only=True)
            device_map = self._device_map or ({"": 0} if self.runtime.device == "cuda" else None)
            report(LoadProgress(0.2, f"Loading weights ({self.runtime.dtype}, {self.runtime.attn_implementation}) "
                                     f"to {self.runtime.device}"))
            self.model = load_progress.run_watched(
                lambda: AutoModelForImageTextToText.from_pretrained(
                    self.source.path,
                    dtype=getattr(torch, self.runtime.dtype),
                    attn_implementation=self.runtime.attn_implementation,
                    device_map=device_map,
                    local_files_only=True,
                ).eval(),
                folder=self.source.path, plan=self._plan, report=report,
            )
        except Exception as exc:  # noqa: BLE001 - whatever failed, nothing may stay half-loaded on a GPU
            failure = load_progress.describe_failure(exc)
        if failure:  # freed outside the except block: its traceback would keep the half-built model alive
            self.unload()
            raise ModelError(f"The model in {self.source.path} could not be loaded: {failure}")
        if self.fast_decode:
            self._prepare_fast_decoder(report)
        self.load_s = time.perf_counter() - started
        report(LoadProgress(1.0, f"Model ready in {self.load_s:.1f} s"))

    def _prepare_fast_decoder(self, report: ProgressCallback) -> None:
        """Build the fast decode path and compile it now, so the first question pays no compilation."""
        from core.models import fast_decode, fast_decode_support
        from core.models.decode_attention import DecodeAttention
        from core.models.fast_decode_batcher import ContinuousBatcher

        status = fast_decode_support.check(self.model)
        self.fast_status = status.reason
        if not status.enabled:
            return
        length, cache_note = fast_decode_support.cache_tokens(fast_decode_support.language_model(self.model).config,
                                                              4096)
        self.fast_decoder, self.fast_status = fast_decode_support.build_and_warm(
            lambda attention: fast_decode.FastDecoder(self.model, length, rows=self.fast_decode_rows,
                                                      attention=attention),
            DecodeAttention(self.decode_attention), status.reason, lambda message: report(LoadProgress(0.95, message)))
        self.fast_status += cache_note if self.fast_decoder is not None else ""
        if self.fast_decoder is not None and self.fast_decoder.rows > 1:
            # Greedy answers decode together in the fast path's rows (continuous batching): the scheduler
            # may run as many at once. Anything else still takes the generation lock, one at a time.
            self.batcher = ContinuousBatcher(self.fast_decoder)
            self.max_in_flight = self.fast_decoder.rows

    def _use_fast_decoder(self, query: Query, input_len: int) -> bool:
        s = query.settings
        return (self.fast_decoder is not None and not s.do_sample and s.num_beams == 1
                and input_len + s.max_new_tokens <= self.fast_decoder.max_len)

    def unload(self) -> None:
        """Drop the model and give its GPU memory back (used when switching models)."""
        if self.fast_decoder is not None:
            self.fast_decoder.close()  # its CUDA graphs and compiled code hold the model's memory
        self.fast_decoder = self.batcher = None
        self.max_in_flight = 1
        self.model = self.processor = None
        give_back_gpu_memory()

    def describe(self) -> ModelCard:
        fast = FAST_DECODE_NOTE(status=self.fast_status)
        return ModelCard(
            name=self.source.name,
            backend=self.name,
            dtype=self.runtime.dtype,
            attn_implementation=self.runtime.attn_implementation,
            device=self.runtime.device,
            is_demo=self.source.is_demo,
            device_map_summary=self._device_map_summary or self.runtime.device,
            notes=tuple(dict.fromkeys(n for n in (self.runtime.note, *self._notes, fast.text) if n)),
            note_messages=(*self._note_messages, fast),
        )

    # -- answer ----------------------------------------------------------------------------------
    def loaded(self) -> LoadedModel:
        """The loaded model, its processor and its generation lock, for answering beside stream() (batched.py)."""
        if self.model is None:
            raise ModelError("The model is not loaded yet.")
        return LoadedModel(self.source.name, self.model, self.processor, self.runtime, self._lock)

    def encode(self, query: Query) -> EncodedQuery:
        """Chat template and processor, once: the inputs generation takes and the exact counts admission takes."""
        refuse_what_it_cannot_take(self, query)
        loaded = self.loaded()
        return encoding.encode_query(loaded.processor, loaded.model, query)

    def device_inputs(self, encoded: EncodedQuery) -> dict[str, Any]:
        """The encoded inputs on the model's device, as generate() takes them (benchmarks call generate() too)."""
        return encoding.to_device(encoded.inputs, self.loaded().model)

    def _generate_kwargs(self, query: Query) -> dict[str, Any]:
        s = query.settings
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_new_tokens,
            "do_sample": s.do_sample,
            "num_beams": s.num_beams,
            "repetition_penalty": s.repetition_penalty,
        }
        if s.do_sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
        return kwargs

    def answer_batch(self, queries: Sequence[Query], *, min_new_tokens: int = 0,
                     cancel: threading.Event | None = None) -> list[tuple[Answer, tuple[int, ...]]]:
        """Several prompts in ONE generate() call: [(Answer, new token ids)], one vision encoding (batched.py)."""
        from core.backends.batched import answer_batch

        return answer_batch(self.loaded(), queries, min_new_tokens=min_new_tokens, cancel=cancel, fast=self.fast_decoder)

    def stream(self, encoded: EncodedQuery) -> AnswerStream:
        import torch

        if self.model is None:
            raise ModelError("The model is not loaded yet.")
        query = encoded.query
        marks = markers.QueryClock(self.source.name, query, sum(p.prepare_s for p in query.images) + encoded.encode_s)
        inputs = encoding.to_device(encoded.inputs, self.model)
        input_len = int(inputs["input_ids"].shape[1])
        marks.preprocess_done()
        streamer = TimedStreamer(self.processor.tokenizer, self._timeout)
        cancel = threading.Event()
        beams = query.settings.num_beams > 1
        stage_mark = FirstTokenMark(marks, cancel)

        def target() -> torch.Tensor:
            fast = self._use_fast_decoder(query, input_len)
            if fast and self.batcher is not None:  # joins the rows other answers are decoding in
                with marks.generating(find_vision_module(self.model), lambda: stage_mark.saw_cancel,
                                      vision_gate=lambda: self.batcher is not None and self.batcher.prefilling is inputs):
                    return self.batcher.generate(
                        inputs, query.settings.max_new_tokens, query.settings.repetition_penalty,
                        self._eos_ids(), streamer=streamer, should_stop=stage_mark.after_token)
            with self._lock:  # one generate() at a time on this model
                if query.settings.seed is not None:
                    torch.manual_seed(query.settings.seed)
                with marks.generating(find_vision_module(self.model), lambda: stage_mark.saw_cancel):
                    decoder = self.fast_decoder if fast else None
                    if decoder is not None:
                        output = decoder.generate(
                            inputs, query.settings.max_new_tokens, query.settings.repetition_penalty,
                            self._eos_ids(), streamer=streamer, should_stop=stage_mark.after_token,
                        )
                    else:
                        with torch.no_grad():
                            output = self.model.generate(
                                **inputs,
                                **self._generate_kwargs(query),
                                streamer=None if beams else streamer,
                                stopping_criteria=[CancelCriteria(cancel), stage_mark],
                            )
            if beams:  # no streaming with beam search: push the whole answer as one piece
                new_ids = output[0, input_len:]
                streamer.on_finalized_text(self.processor.decode(new_ids, skip_special_tokens=True), stream_end=True)
            return output

        def finish(thread: GenerationThread) -> Answer:
            readings = marks.readings()
            if beams:  # its answer arrives in one piece: like the analyst, the Answer sees no decode stage
                readings = dataclasses.replace(readings, first_token=None)
            generated = self._generated(query, thread.result, input_len, stage_mark.saw_cancel)
            return build_answer(query, generated, readings, model=self.source.name)

        return AnswerStream(GenerationThread(target, streamer).start(), cancel, finish)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def _generated(self, query: Query, output: torch.Tensor, input_len: int, cancelled: bool) -> Generated:
        new_ids = output[0, input_len:].tolist()
        eos_ids = self._eos_ids()
        pad = self.model.generation_config.pad_token_id
        while new_ids and new_ids[-1] == pad and pad not in eos_ids:
            new_ids.pop()
        hit_limit = len(new_ids) >= query.settings.max_new_tokens and new_ids[-1] not in eos_ids
        return Generated(self.processor.decode(new_ids, skip_special_tokens=True), input_len, len(new_ids),
                         hit_limit, cancelled)
