"""The pre-flight check: before any weight is read, will this model fit where it is about to be loaded?

- GPUs and their free memory come from NVML through the one GPU reader (core/telemetry/gpu_reader.py),
  read before torch touches CUDA.
  CUDA_VISIBLE_DEVICES is read as CUDA reads it (indices, UUIDs or prefixes, a MIG device), so the GPUs
  planned on are the ones the model will load on, numbered as CUDA numbers them.
- `max_memory_gb` caps what each GPU may use ("22.2,22.2": GPU0, GPU1; one value caps every GPU; GPUs
  beyond the list are not used). `split` pins the layer split; the planner validates both.
- dtype: bf16 when every GPU used has compute capability 8.0+, else fp16 with a note; fp32 on the CPU.
- No GPU: the check says so. With device = "auto", Loupe falls back to the CPU only for small models
  (at most CPU_MAX_PARAMS parameters, like the demo's 0.2 M); larger ones are refused with the numbers.
  With device = "cpu" any model whose fp32 weights fit in the free RAM is allowed (slowly).
- Every backend Loupe loads attends with SDPA (or flash-attn) and keeps the logits of the last position only,
  InternLM-XComposer2.5's own implementation included: no eager-attention or full-logits reserve is counted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from core import setting_rules
from core.errors import ConfigError, PreflightError
from core.messages import Message, MessageText
from core.models import model_shape, planner
from core.models.memory_model import Workload
from core.records import ShardPlan
from core.settings import Settings
from core.telemetry import gpu_reader, nvml
from core.telemetry.snapshots import GpuSnapshot

CPU_MAX_PARAMS = 1_000_000_000
REMOTE_CODE_NOTE = ("trust_remote_code is set but has no effect: Loupe never runs code shipped in a model folder "
                    "(InternLM-XComposer2.5 runs on Loupe's own implementation); remove it from loupe.toml")
GB = 1e9
REMOTE_CODE = MessageText("model.remote_code_ignored", REMOTE_CODE_NOTE)
FP16_NOTE = MessageText("model.fp16", "bf16 needs compute capability 8.0+ (GPU{index} has {seen}): using fp16")
CPU_BY_SETTING = MessageText("model.cpu_by_setting", "running on the CPU (device = 'cpu')")
NO_GPU = MessageText("model.no_gpu", "no GPU visible ({reason}): running on the CPU")


@dataclass(frozen=True)
class Clearance:
    """The pre-flight verdict: where the model will run, in which dtype, with which plan, and why."""

    device: str  # "cuda" | "cpu"
    dtype: str
    plan: ShardPlan | None  # None on the CPU
    params: int
    notes: tuple[str, ...] = ()
    note_messages: tuple[Message, ...] = ()  # those of the notes that carry an id (core/messages.py)

    @property
    def device_map(self) -> dict[str, int] | None:
        return dict(self.plan.device_map) if self.plan else None

    @property
    def summary(self) -> str:
        return self.plan.summary() if self.plan else "cpu"


def visible_gpus(gpus: tuple[GpuSnapshot, ...]) -> tuple[GpuSnapshot, ...]:
    """Given figures as CUDA will number them under CUDA_VISIBLE_DEVICES (indices, UUIDs, their prefixes)."""
    return gpu_reader.visible_to_cuda(gpus)


def choose_dtype(gpus: tuple[GpuSnapshot, ...]) -> tuple[str, str]:
    """(dtype, note): bf16 needs compute capability 8.0+ on every GPU used."""
    note = _fp16_note(gpus)
    return ("float16", note.text) if note else ("bfloat16", "")


def _fp16_note(gpus: tuple[GpuSnapshot, ...]) -> Message | None:
    old = [g for g in gpus if g.compute_capability is None or g.compute_capability < (8, 0)]
    if not old:
        return None
    cc = old[0].compute_capability
    return FP16_NOTE(index=old[0].index, seen=f"{cc[0]}.{cc[1]}" if cc else "unknown")


def memory_held(backend: object) -> dict[int, int]:
    """CUDA index → bytes the weights of a loaded backend's model occupy (what unloading it gives back)."""
    held: dict[int, int] = {}
    model = getattr(backend, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return held
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "cuda":
            index = tensor.device.index or 0
            held[index] = held.get(index, 0) + tensor.numel() * tensor.element_size()
    return held


def capacities(gpus: tuple[GpuSnapshot, ...], max_memory_gb: str) -> tuple[list[tuple[int, int]], str]:
    """(CUDA index, usable bytes) per GPU offered to the planner, and where the numbers come from."""
    if not max_memory_gb:
        return [(g.index, g.free_bytes or 0) for g in gpus], "free"
    caps = setting_rules.parse_memory(max_memory_gb)
    if len(caps) == 1:
        caps = caps * len(gpus)
    if len(caps) > len(gpus):
        raise ConfigError(f"max_memory_gb lists {len(caps)} GPUs but {len(gpus)} are visible")
    return [(g.index, min(g.free_bytes or 0, int(cap * GB))) for g, cap in zip(gpus, caps, strict=False)], "usable"


def refusal(plan: ShardPlan) -> str:
    """The analyst-facing reason a plan does not fit: what is needed, what is there, what to change."""
    verb = {"free": "has {} GB free", "usable": "may use {} GB (max_memory_gb)", "given": "has {} GB"}[plan.capacity_source]
    have = ", ".join(f"GPU{i} " + verb.format(f"{b / GB:.1f}") for i, b in plan.capacities.items())
    text = (f"{plan.model} needs {plan.total_bytes / GB:.1f} GB in all ({plan.weights_bytes / GB:.1f} GB of weights "
            f"+ {plan.reserve_bytes / GB:.1f} GB reserve for {plan.context_tokens} tokens of context); {have}")
    over = max(plan.gpus, key=lambda g: g.predicted_bytes - g.capacity_bytes)
    if len(plan.gpus) > 1 or plan.pinned:
        how = "with the pinned split," if plan.pinned else f"no split of its {plan.gpus[-1].layers[1] + 1} layers fits:"
        text += (f"; {how} GPU{over.index} would need {over.predicted_bytes / GB:.1f} GB "
                 f"(layers {over.layers[0]}-{over.layers[1]})")
    advice = "add a second GPU" if len(plan.capacities) == 1 else "add a GPU"
    if plan.pinned:
        advice = "change the pinned split, " + advice
    return f"{text}; {advice} or lower the image size / max tokens"


def _cpu(shape_params: int, name: str, settings: Settings, reason: str) -> Clearance:
    need = shape_params * 4  # fp32 on the CPU
    free = psutil.virtual_memory().available
    if settings.device == "cpu":
        if need > free:
            raise PreflightError(f"{name} needs {need / GB:.1f} GB of RAM in fp32; {free / GB:.1f} GB is free.")
        return _with_notes(Clearance("cpu", "float32", None, shape_params), CPU_BY_SETTING())
    if shape_params > CPU_MAX_PARAMS or need > free:
        raise PreflightError(
            f"No GPU is visible ({reason}). {name} has {shape_params / 1e9:.1f} B parameters ({need / GB:.1f} GB in "
            f"fp32) and is too large for the CPU: without a GPU Loupe runs models up to {CPU_MAX_PARAMS / 1e9:.0f} B "
            "parameters, like the demo. Use a machine with a GPU, set device = 'cpu' to insist, or plan for cards you "
            "do not have here with `python -m core plan MODEL --gpu-memory 22.2,22.2`."
        )
    return _with_notes(Clearance("cpu", "float32", None, shape_params), NO_GPU(reason=reason))


def _with_notes(clearance: Clearance, *said: Message) -> Clearance:
    return replace(clearance, notes=(*clearance.notes, *(m.text for m in said)),
                   note_messages=(*clearance.note_messages, *said))


def _setting_notes(settings: Settings) -> tuple[Message, ...]:
    """Settings accepted for old loupe.toml files that no longer change anything, said on the model card."""
    return (REMOTE_CODE(),) if settings.trust_remote_code else ()


def _torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check(
    folder: Path | str,
    settings: Settings,
    *,
    name: str | None = None,
    gpus: tuple[GpuSnapshot, ...] | None = None,
    workload: Workload | None = None,
    reclaim: dict[int, int] | None = None,
) -> Clearance:
    """Plan the model in `folder` for this machine and refuse, with the numbers, if it cannot fit.

    `gpus` defaults to NVML's reading; figures given instead (tests, benchmarks, what-if) are used as they are.
    `reclaim` (CUDA index → bytes, see memory_held) counts as free: the model being replaced, which is
    unloaded before this one loads. Nothing is loaded.
    """
    name = name or Path(folder).name
    if settings.device == "cpu":
        gpus, reason = (), "device = 'cpu'"
    elif gpus is None:
        gpus = gpu_reader.read_visible()
        reason = nvml.state() if nvml.state() != "ok" else "CUDA_VISIBLE_DEVICES hides them"
        if gpus and not _torch_has_cuda():
            gpus, reason = (), "NVML sees GPUs but this torch build has no CUDA support"
    else:
        gpus, reason = visible_gpus(gpus), "no GPU given"
    if not gpus:
        if settings.device == "cuda":
            raise PreflightError(f"The settings ask for a GPU (device = 'cuda') but no GPU is visible ({reason}).")
        shape = model_shape.load_shape(folder, dtype="float32", max_images=settings.max_images)
        cpu = _cpu(shape.params, name, settings, reason)
        return _with_notes(cpu, *_setting_notes(settings))
    if reclaim:
        gpus = tuple(replace(g, free_bytes=(g.free_bytes or 0) + reclaim.get(g.index, 0)) for g in gpus)
    caps, source = capacities(gpus, settings.max_memory_gb)
    fp16 = _fp16_note(tuple(g for g in gpus if g.index in dict(caps)))
    dtype = "float16" if fp16 else "bfloat16"
    shape = replace(model_shape.load_shape(folder, dtype=dtype, max_images=settings.max_images), name=name)
    work = workload or planner.largest_workload(shape, settings.max_new_tokens, settings.max_question_chars)
    plan = planner.plan(shape, caps, work, split=settings.split, capacity_source=source)
    if not plan.fits:
        raise PreflightError(refusal(plan))
    said = (*((fp16,) if fp16 else ()), *_setting_notes(settings))
    notes = (*plan.notes, *(m.text for m in said))
    return Clearance("cuda", dtype, replace(plan, notes=notes), shape.params, notes, said)


def plan_for_cards(
    folder: Path | str, cards_gb: tuple[float, ...], settings: Settings, *, name: str | None = None
) -> ShardPlan:
    """What-if planning for GPUs that need not be here, in bf16."""
    shape = model_shape.load_shape(folder, dtype="bfloat16", max_images=settings.max_images)
    shape = replace(shape, name=name or shape.name)
    work = planner.largest_workload(shape, settings.max_new_tokens, settings.max_question_chars)
    caps = [(i, int(gb * GB)) for i, gb in enumerate(cards_gb)]
    plan = planner.plan(shape, caps, work, split=settings.split, capacity_source="given")
    if not plan.fits:
        raise PreflightError(refusal(plan))
    return plan
