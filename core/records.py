"""The frozen records that cross Loupe's boundaries (core ↔ pages, core ↔ history, core ↔ API).

GPU readings and stage timelines are telemetry's own records: core/telemetry/snapshots.py."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from PIL import Image

from core.messages import Message
from core.statuses import RequestStatus


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """An image exactly as the model will see it (RGB, oriented, resized), with what was done to it."""

    image: Image.Image
    notes: tuple[str, ...]
    source_format: str
    original_size: tuple[int, int]
    sha256: str  # of the uploaded bytes, so history can find the same upload again
    prepare_s: float
    frames: int = 0  # frames of a video tiled into this one image (core/inputs/video.py); 0 for a still image
    note_messages: tuple[Message, ...] = ()  # the notes with their ids (core/messages.py), for the dashboard

    @property
    def is_video(self) -> bool:
        return self.frames > 0

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate; defaults are those users of InternLM-XComposer2.5 know (greedy, 1024 tokens)."""

    max_new_tokens: int = 1024
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.8
    num_beams: int = 1
    repetition_penalty: float = 1.005
    seed: int | None = None

    def __post_init__(self) -> None:
        # Imported here: records must stay importable without a circular import through errors.
        from core.errors import QuestionError

        if not 1 <= self.max_new_tokens <= 8192:
            raise QuestionError(f"max_new_tokens must be between 1 and 8192, got {self.max_new_tokens}")
        if not 1 <= self.num_beams <= 3:
            raise QuestionError(f"num_beams must be 1, 2 or 3, got {self.num_beams}")
        if self.temperature <= 0:
            raise QuestionError(f"temperature must be above 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise QuestionError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise QuestionError(f"repetition_penalty must be above 0, got {self.repetition_penalty}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Turn:
    """One earlier question and its answer in the same conversation (the model's chat() `history`)."""

    question: str
    answer: str


@dataclass(frozen=True, eq=False)
class Query:
    """One question about one or more prepared images, with the settings to answer it."""

    images: tuple[PreparedImage, ...]
    question: str
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    history: tuple[Turn, ...] = ()


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage of one answer. `queue`: waiting in the model's queue (the scheduler's clock;
    0 for a call that bypassed it: the CLI, Compare's batched call). `total` is wall time from the image's
    preparation to the last token: preparation and encoding, the queue, then the model's stages."""

    preprocess: float = 0.0
    vision: float = 0.0
    prefill: float = 0.0
    decode: float = 0.0
    total: float = 0.0
    queue: float = 0.0

    def after_queue(self, queue_s: float, until_served_s: float) -> StageTimings:
        """These timings with the time spent in the scheduler before the backend took the request: `queue_s`
        waiting for a worker, `until_served_s` (≥ queue_s, it includes the worker's admission check) from
        entering the queue to the backend's start, which `total` gains."""
        return replace(self, queue=queue_s, total=self.total + until_served_s)


@dataclass(frozen=True)
class Answer:
    """What came back for one query: text, whether it was cut, token counts, timings and peak memory."""

    text: str
    truncated: bool
    input_tokens: int
    output_tokens: int
    tokens_per_s: float  # decode rate: tokens after the first / decode seconds
    timings: StageTimings
    peak_memory_gb: dict[str, float]  # "cuda:0" → GB allocated at peak; "cpu" → process RSS
    image_notes: tuple[str, ...]
    model: str
    settings: GenerationSettings

    def to_json(self) -> dict[str, Any]:
        """The `ask --json` contract: these keys are an interface, keep them."""
        t = self.timings
        return {
            "text": self.text,
            "truncated": self.truncated,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens_per_s": round(self.tokens_per_s, 3),
            "timings_s": {
                "queue": round(t.queue, 4),
                "preprocess": round(t.preprocess, 4),
                "vision": round(t.vision, 4),
                "prefill": round(t.prefill, 4),
                "decode": round(t.decode, 4),
                "total": round(t.total, 4),
            },
            "peak_memory_gb": {k: round(v, 3) for k, v in self.peak_memory_gb.items()},
            "image_notes": list(self.image_notes),
            "model": self.model,
            "settings": self.settings.to_dict(),
        }


@dataclass(frozen=True)
class ModelCard:
    """How a loaded model describes itself to the UI (the sidebar card) and to history."""

    name: str
    backend: str
    dtype: str
    attn_implementation: str
    device: str
    is_demo: bool = False
    device_map_summary: str = ""
    notes: tuple[str, ...] = ()
    note_messages: tuple[Message, ...] = ()  # those of the notes that carry an id (core/messages.py)


@dataclass(frozen=True)
class QueueSnapshot:
    """The scheduler's queue at one moment: how many wait, whether one runs (and how many), how many sessions wait."""

    waiting: int
    running: bool
    sessions: int
    in_flight: int = 0  # requests being answered now (up to remote_max_in_flight for a remote engine)


@dataclass(frozen=True, eq=False)
class FinishedRequest:
    """One request the scheduler is done with (answered, failed, refused or cancelled), for history hooks."""

    request_id: int
    session: str
    query: Query
    status: RequestStatus  # DONE, FAILED, REFUSED or CANCELLED
    answer: Answer | None
    error: str  # the analyst-facing message when status is not "done"; "" otherwise
    error_type: str  # e.g. "GenerationError", "AdmissionError"; "" when done
    submitted_at: float  # wall clock (time.time()) when it entered the queue
    waited_s: float  # seconds in the queue before the worker took it
    run_s: float  # seconds the worker spent on it (0 when cancelled in the queue)


@dataclass(frozen=True)
class GpuShare:
    """One GPU's part of a ShardPlan: its decoder layers, other modules, and predicted bytes (GB = 1e9 bytes)."""

    index: int  # CUDA index, as device_map and torch number it
    layers: tuple[int, int]  # first and last decoder layer, inclusive
    modules: tuple[str, ...]  # the other device_map entries it holds (vision tower, embeddings, LM head, ...)
    weights_bytes: int
    kv_cache_bytes: int  # 2 × its layers × kv heads × head dim × context tokens × batch × dtype bytes
    activation_bytes: int  # the largest transient on it: a layer's prefill, the vision tower, or the logits
    context_bytes: int  # CUDA context and allocator slack
    capacity_bytes: int  # what it may use: NVML free memory, capped by max_memory_gb / --gpu-memory

    @property
    def reserve_bytes(self) -> int:
        return self.kv_cache_bytes + self.activation_bytes + self.context_bytes

    @property
    def predicted_bytes(self) -> int:
        return self.weights_bytes + self.reserve_bytes


@dataclass(frozen=True)
class ShardPlan:
    """Where each part of a model goes, GPU by GPU, with predicted memory; made from its config alone."""

    model: str
    dtype: str
    layer_prefix: str  # decoder layer N is device_map key f"{layer_prefix}.{N}"
    gpus: tuple[GpuShare, ...]  # the GPUs used, in order (GPU0 first: images and tokens enter there)
    device_map: dict[str, int]  # what from_pretrained(device_map=...) takes
    unused_gpus: tuple[int, ...]  # offered but not needed: a model that fits fewer GPUs stays on fewer
    capacities: dict[int, int]  # every GPU offered → usable bytes
    context_tokens: int  # question + image tokens + max_new_tokens, the KV cache's length
    image_tokens: int
    max_new_tokens: int
    batch: int
    fits: bool
    pinned: bool = False  # the layer split came from the settings, not from the planner
    capacity_source: str = "free"  # "free" (NVML), "usable" (max_memory_gb), "given" (--gpu-memory)
    notes: tuple[str, ...] = ()

    @property
    def weights_bytes(self) -> int:
        return sum(g.weights_bytes for g in self.gpus)

    @property
    def reserve_bytes(self) -> int:
        return sum(g.reserve_bytes for g in self.gpus)

    @property
    def total_bytes(self) -> int:
        return sum(g.predicted_bytes for g in self.gpus)

    def summary(self) -> str:
        """One line for the model card, e.g. 'GPU0: layers 0-15 (14.2 GB) · GPU1: layers 16-31 (8.5 GB)'."""
        return " · ".join(
            f"GPU{g.index}: layers {g.layers[0]}-{g.layers[1]} ({g.predicted_bytes / 1e9:.1f} GB)" for g in self.gpus
        )

    def to_json(self) -> dict[str, Any]:
        """The `plan --json` contract: `gpus` (index, layers, modules, predicted_gb, capacity_gb), `reserve_gb`,
        `total_gb` are an interface; keep them."""
        gb = lambda n: round(n / 1e9, 2)  # noqa: E731
        return {
            "model": self.model,
            "dtype": self.dtype,
            "fits": self.fits,
            "pinned": self.pinned,
            "gpus": [
                {
                    "index": g.index, "layers": list(g.layers), "modules": list(g.modules),
                    "predicted_gb": gb(g.predicted_bytes), "capacity_gb": gb(g.capacity_bytes),
                    "weights_gb": gb(g.weights_bytes), "reserve_gb": gb(g.reserve_bytes),
                    "kv_cache_gb": gb(g.kv_cache_bytes), "activations_gb": gb(g.activation_bytes),
                    "context_gb": gb(g.context_bytes),
                }
                for g in self.gpus
            ],
            "unused_gpus": list(self.unused_gpus),
            "weights_gb": gb(self.weights_bytes),
            "reserve_gb": gb(self.reserve_bytes),
            "total_gb": gb(self.total_bytes),
            "workload": {"context_tokens": self.context_tokens, "image_tokens": self.image_tokens,
                         "max_new_tokens": self.max_new_tokens, "batch": self.batch},
            "notes": list(self.notes),
            "device_map": dict(self.device_map),
        }
