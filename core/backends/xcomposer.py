"""Backend for InternLM-XComposer2.5-7B: the model's own remote code and its own chat() API.

UNVERIFIED ON REAL WEIGHTS. No XComposer checkpoint can be downloaded where Loupe is built and tested, so
what is tested is the config handling, the refusal without opt-in, and the device_map this backend passes
to from_pretrained. The remote code was written for transformers 4.3x-4.4x; if it fails to import, load
or generate under the installed transformers, the analyst gets a ModelError / GenerationError, not a crash.

Decisions:
- Runs only with `trust_remote_code = true` in the settings: the model folder's Python code runs in this
  process. Without it, a ModelError says how to opt in.
- Loads from the local folder only, with the pre-flight plan's device_map (`vit`, `vision_proj`,
  `plora_glb_GN`, `plora_sub_GN`, `model.tok_embeddings` on GPU0; `model.layers.N` split; `model.norm`
  and `output` with the last layers). The code calls `.cuda()` itself, so there is no CPU fallback.
- flash-attn when importable, else eager attention (the pre-flight check then counts its quadratic memory).
- Answers through `model.chat(tokenizer, query, image=[paths], hd_num, history=[], streamer,
  max_new_tokens, ...)`. Prepared images are written to temporary PNG files because chat() runs its own
  high-resolution crop transform on file paths. hd_num is 24 (the model's default) for one image; the
  model itself uses 6 per image with several. Every question starts a new conversation (history=[]).
- Stage timings and markers from the same stage clock as the transformers backend (hooks on `vit`, the
  first-token check as a stopping criterion), the Answer from the one answer builder. Input tokens are
  read from the embeddings the decoder receives; output tokens are counted as they stream.
- `encode` cannot count tokens ahead (chat() builds the prompt itself): its encoding carries no counts, and
  admission estimates this model's image tokens from its bounds (core/models/model_shape.py).
"""
from __future__ import annotations

import dataclasses
import gc
import importlib.util
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.backends.answer_builder import Generated, build_answer
from core.backends.base import EncodedQuery, refuse_what_it_cannot_take
from core.backends.stage_clocks import FirstTokenMark
from core.backends.streaming import AnswerStream, CancelCriteria, GenerationThread, TimedStreamer
from core.errors import ModelError
from core.models import load_progress, model_shape, preflight
from core.models.load_progress import LoadProgress, ProgressCallback
from core.models.model_source import ModelSource
from core.records import Answer, ModelCard, Query
from core.settings import Settings
from core.statuses import TraceOutcome
from core.telemetry import gpu_reader, markers

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle
    from transformers import PreTrainedTokenizerBase

HD_NUM = model_shape.XCOMPOSER_HD_NUM


def opt_in_refusal(name: str) -> ModelError:
    return ModelError(
        f"{name} is an InternLM-XComposer model: it runs Python code shipped in the model folder. Loupe runs such "
        "code only when you allow it: set trust_remote_code = true in loupe.toml (or LOUPE_TRUST_REMOTE_CODE=1)."
    )


def create_xcomposer(source: ModelSource, settings: Settings, *, reclaim: dict[int, int] | None = None) -> XComposerBackend:
    """Refuse without opt-in, check the config, run the pre-flight check, then build the (unloaded) backend."""
    config = model_shape.read_config(source.path)
    if not model_shape.is_xcomposer(config):
        raise ModelError(f"backend = 'xcomposer' but {source.name} is a '{config.get('model_type', '?')}' model; "
                         "use backend = 'auto' (or 'transformers').")
    if not settings.trust_remote_code:
        raise opt_in_refusal(source.name)
    clearance = preflight.check(source.path, settings, name=source.name, reclaim=reclaim)
    if clearance.device != "cuda":
        raise ModelError("InternLM-XComposer's own code needs a CUDA GPU; it cannot run on the CPU.")
    return XComposerBackend(source, clearance, max_images=settings.max_images,
                            stream_timeout_s=settings.stream_timeout_s)


class CountingStreamer(TimedStreamer):
    """A TimedStreamer that also counts the new tokens it was given."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, timeout_s: float) -> None:
        super().__init__(tokenizer, timeout_s)
        self.new_tokens = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            self.new_tokens += int(value.numel())
        super().put(value)


class XComposerBackend:
    """Loads an XComposer2.5 folder with its remote code on the planned GPUs and answers through chat()."""

    name = "xcomposer"
    can_stream = True
    can_batch = False  # chat() takes one query
    max_images = 4
    takes_history = False
    takes_video = False

    def __init__(self, source: ModelSource, clearance: preflight.Clearance, *, max_images: int = 4,
                 stream_timeout_s: float = 120.0, hd_num: int = HD_NUM) -> None:
        if clearance.plan is None:
            raise ModelError("The XComposer backend needs a GPU plan from the pre-flight check.")
        self.source = source
        self.clearance = clearance
        self.has_local_gpus = True
        self.max_images = max_images
        self.hd_num = hd_num
        self.attn_implementation = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "eager"
        self._timeout = stream_timeout_s
        self._lock = threading.Lock()
        self.model: Any = None
        self.tokenizer: Any = None
        self._hooks: list[RemovableHandle] = []
        self._prompt_len = [0]
        self.load_s = 0.0

    def load_kwargs(self) -> dict[str, Any]:
        """What from_pretrained receives (besides the config): local files only, remote code, the plan."""
        import torch

        return {"trust_remote_code": True, "local_files_only": True,
                "dtype": getattr(torch, self.clearance.dtype), "device_map": self.clearance.device_map}

    # -- load ------------------------------------------------------------------------------------
    def load(self, progress: ProgressCallback | None = None) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        report = progress or (lambda _p: None)
        started = time.perf_counter()
        path = self.source.path
        report(LoadProgress(0.05, f"Reading XComposer code, config and tokenizer from {path} (remote code)"))
        failure = ""
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=True, local_files_only=True)
            config.attn_implementation = self.attn_implementation  # read by XComposer's InternLM2 code
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True, local_files_only=True)
            self.model = load_progress.run_watched(
                lambda: AutoModel.from_pretrained(path, config=config, **self.load_kwargs()).eval(),
                folder=path, plan=self.clearance.plan, report=report,
            )
            self.model.tokenizer = self.tokenizer
        except Exception as exc:  # noqa: BLE001 - remote code can raise anything; nothing may stay half-loaded
            failure = load_progress.describe_failure(exc)
        if failure:  # freed outside the except block: its traceback would keep the half-built model alive
            self.unload()
            raise ModelError(f"The XComposer model in {path} could not be loaded: {failure}")
        self._hooks.append(self.model.model.register_forward_pre_hook(self._note_prompt, with_kwargs=True))
        self.load_s = time.perf_counter() - started
        report(LoadProgress(1.0, f"Model ready in {self.load_s:.1f} s"))

    def _note_prompt(self, _module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and self._prompt_len[0] == 0:
            self._prompt_len[0] = int(embeds.shape[1])

    def unload(self) -> None:
        import torch

        for handle in self._hooks:
            handle.remove()
        self._hooks, self.model, self.tokenizer = [], None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def describe(self) -> ModelCard:
        return ModelCard(
            name=self.source.name, backend=self.name, dtype=self.clearance.dtype,
            attn_implementation=self.attn_implementation, device="cuda", is_demo=False,
            device_map_summary=self.clearance.summary,
            notes=("XComposer backend: unverified on real weights", *self.clearance.notes),
        )

    # -- answer ----------------------------------------------------------------------------------
    def encode(self, query: Query) -> EncodedQuery:
        """Nothing to encode ahead: chat() tokenizes and crops the images itself (see the module docstring)."""
        refuse_what_it_cannot_take(self, query)  # this remote-code path passes no history and no video
        return EncodedQuery(query, None, None, None, 0.0)

    def stream(self, encoded: EncodedQuery) -> AnswerStream:
        import torch

        if self.model is None:
            raise ModelError("The model is not loaded yet.")
        query = encoded.query
        marks = markers.QueryClock(self.source.name, query, sum(p.prepare_s for p in query.images))
        folder = tempfile.TemporaryDirectory(prefix="loupe-xcomposer-")
        paths = []
        for number, prepared in enumerate(query.images):
            paths.append(str(Path(folder.name) / f"image-{number}.png"))
            prepared.image.save(paths[-1], format="PNG")
        marks.preprocess_done()
        streamer = CountingStreamer(self.tokenizer, self._timeout)
        cancel = threading.Event()
        stage_mark = FirstTokenMark(marks, cancel)
        s = query.settings
        beams = s.num_beams > 1
        prompt_len: dict[str, int] = {}

        def target() -> str:
            with self._lock:  # one generation at a time on this model
                self._prompt_len[0] = 0
                if s.seed is not None:
                    torch.manual_seed(s.seed)
                marks.generation_started(getattr(self.model, "vit", None))
                try:
                    response, _history = self.model.chat(
                        self.tokenizer, query.question, image=paths or None, hd_num=self.hd_num, history=[],
                        streamer=None if beams else streamer, max_new_tokens=s.max_new_tokens,
                        do_sample=s.do_sample, num_beams=s.num_beams, temperature=s.temperature, top_p=s.top_p,
                        repetition_penalty=s.repetition_penalty, stopping_criteria=[CancelCriteria(cancel), stage_mark],
                    )
                    gpu_reader.synchronize()
                except BaseException:
                    marks.finish(TraceOutcome.FAILED)
                    raise
                finally:
                    folder.cleanup()
                marks.generation_ended()
                prompt_len["input_tokens"] = self._prompt_len[0]
            marks.finish(TraceOutcome.CANCELLED if stage_mark.saw_cancel else TraceOutcome.ANSWERED)
            if beams:  # no streaming with beam search: the whole answer as one piece
                streamer.on_finalized_text(response, stream_end=True)
                streamer.new_tokens = len(self.tokenizer.encode(response, add_special_tokens=False))
            return response

        def finish(thread: GenerationThread) -> Answer:
            readings = marks.readings()
            if beams:  # as in the transformers backend: an answer in one piece has no decode stage
                readings = dataclasses.replace(readings, first_token=None)
            generated = Generated(str(thread.result or ""), prompt_len.get("input_tokens", 0), streamer.new_tokens,
                                  hit_limit=streamer.new_tokens >= s.max_new_tokens, cancelled=cancel.is_set())
            return build_answer(query, generated, readings, model=self.source.name)

        return AnswerStream(GenerationThread(target, streamer).start(), cancel, finish)
