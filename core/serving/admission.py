"""Admission: before a question runs, estimate the memory it needs and refuse it when that is not free.

The need comes from the one memory model (core/models/memory_model.py), the planner's: per device that holds
decoder layers, the KV cache of its layers over prompt + max_new_tokens (batch = num_beams), plus the largest
transient it sees (one layer's prefill; the vision tower on the device images enter; the logits on the head's
device), then × 1.2 + 64 MiB for what the formulas leave out. The plan's reserve for the same workload on
the same devices is that need before the margin plus the CUDA context, which a loaded model has already spent.
The workload (frozen, shared with the planner) counts exact tokens when the caller has encoded the question
(`prompt_tokens`), else the question's tokens (from the tokenizer, or 3 per character) + the chat template +
image tokens by the model's rules: a fixed count per image for fixed-size towers (XComposer2.5: 24 crops for
one image, 6 each for several, as the planner counts them), or one per `patch_pixels` for dynamic ones.
Free, per GPU (the one GPU reader): what CUDA reports free plus what PyTorch's cache holds unused, and, when the
planner's budget `max_memory_gb` is set, at most that budget minus what this process has allocated there.
On CPU the need is compared with the RAM the system reports available.
A refusal is an AdmissionError (a QuestionError: the fix is to ask a smaller question) that says what to reduce.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from core.backends.base import EncodedQuery
from core.errors import AdmissionError, ModelError
from core.models import memory_model, model_shape
from core.models.memory_model import Attention, DeviceNeed, Geometry, Workload, kv_cache_bytes
from core.records import Query
from core.telemetry import gpu_reader

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from core.backends.base import Backend

GB = 1e9
_UNKNOWN_PATCH_PIXELS = 14 * 28


@dataclass(frozen=True)
class ModelMemorySpec:
    """What decides a question's memory on a loaded model: its geometry, where its parts sit, how images count."""

    geometry: Geometry
    layers: int
    layers_by_device: dict[str, int]  # "cuda:0" → decoder layers it holds; "cpu" when on CPU
    vision_device: str
    head_device: str
    image_tokens: int  # LLM tokens per image when the question has one, for fixed-size towers; 0 = from its size
    image_tokens_several: int  # per image when it has several (XComposer2.5 drops from 24 crops to 6 each)
    vision_tokens: int  # tokens the vision tower encodes per image when the question has one (all its crops)
    vision_tokens_several: int
    patch_pixels: int  # pixels per image token for dynamic-resolution towers (e.g. 28×28 for Qwen2-VL)
    vision_tokens_per_image_token: int = 1  # dynamic towers merge this many patches into one LLM token
    attention: Attention = Attention.SDPA


@dataclass(frozen=True)
class MemoryEstimate:
    """What one question is estimated to need, per device, and the workload behind it."""

    workload: Workload
    device_needs: dict[str, DeviceNeed]  # before the margin: the plan's reserve less its CUDA context
    need_bytes: dict[str, int]  # with the margin: what admission compares with free memory
    kv_bytes_per_token: int  # over all layers and beams, for the "what to reduce" advice


def _device_name(device: object) -> str:
    text = str(device)
    if text.isdigit():
        return f"cuda:{text}"
    return "cuda:0" if text == "cuda" else text


def _layers_by_device(model: torch.nn.Module, layers: int) -> dict[str, int]:
    device_map = getattr(model, "hf_device_map", None) or {}
    counts: Counter[str] = Counter()
    for name, device in device_map.items():
        parts = name.split(".")
        if "layers" in parts and parts.index("layers") + 1 < len(parts) and parts[parts.index("layers") + 1].isdigit():
            if "vision" not in name and "visual" not in name:
                counts[_device_name(device)] += 1
    if not counts:  # the whole model on one device (or a map that places whole sub-models)
        return {_device_name(getattr(model, "device", "cpu")): layers}
    return dict(counts)


def _first_device(model: torch.nn.Module) -> str:
    """Where images and tokens enter: the device map's first entry, else the model's device."""
    device_map = getattr(model, "hf_device_map", None) or {}
    return _device_name(next(iter(device_map.values())) if device_map else getattr(model, "device", "cpu"))


def _head_device(model: PreTrainedModel, fallback: str) -> str:
    """The LM head's device: its device-map entry when the model is dispatched, else its weight's device."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    device_map = getattr(model, "hf_device_map", None) or {}
    if head is not None and device_map:
        name = next((n for n, m in model.named_modules() if m is head), "")
        owners = [key for key in device_map if name == key or name.startswith(key + ".") or not key]
        if owners:
            return _device_name(device_map[max(owners, key=len)])
    weight = getattr(head, "weight", None)
    return _device_name(weight.device if weight is not None else fallback)


def _image_rules(config: PretrainedConfig) -> dict[str, int]:
    """How a loaded model's images count, in LLM tokens and vision-tower tokens, per image."""
    if model_shape.is_xcomposer(config.to_dict()):
        vision = model_shape.xcomposer_vision(config.to_dict())
        per_crop = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
        one = model_shape.xcomposer_image_tokens(vision["image_size"], vision["patch_size"], model_shape.XCOMPOSER_HD_NUM)
        each = model_shape.xcomposer_image_tokens(vision["image_size"], vision["patch_size"],
                                                   model_shape.XCOMPOSER_MULTI_HD_NUM)
        return {"image_tokens": one[0], "image_tokens_several": each[0], "vision_tokens": one[1] * per_crop,
                "vision_tokens_several": each[1] * per_crop, "patch_pixels": 0}
    tower = getattr(config, "vision_config", None)
    tokens = int(getattr(config, "image_seq_length", 0) or 0)
    patch = int(getattr(tower, "patch_size", 14) or 14)
    merge = int(getattr(tower, "spatial_merge_size", 1) or 1)
    side = int(getattr(tower, "image_size", 0) or 0) if tower is not None else 0
    patches = (side // patch) ** 2 if side and merge == 1 else 0
    if tokens or patches:  # a fixed-size tower: its patches and a CLS token per image
        per_image = tokens or patches
        return {"image_tokens": per_image, "image_tokens_several": per_image, "patch_pixels": 0,
                "vision_tokens": (patches or per_image) + 1, "vision_tokens_several": (patches or per_image) + 1}
    # Dynamic resolution; an unknown tower: one token per 392 pixels, high for Qwen2-VL-like towers (784).
    dynamic = tower is not None
    return {"image_tokens": 0, "image_tokens_several": 0, "vision_tokens": 0, "vision_tokens_several": 0,
            "patch_pixels": (patch * merge) ** 2 if dynamic else _UNKNOWN_PATCH_PIXELS,
            "vision_tokens_per_image_token": merge * merge if dynamic else 1}


def spec_from_model(model: PreTrainedModel) -> ModelMemorySpec:
    """Read a loaded model's config with the planner's readers (LLaVA, Qwen2-VL, InternLM2-style, XComposer2.5)."""
    config = model.config
    dtype_bytes = int(getattr(getattr(model, "dtype", None), "itemsize", 4) or 4)
    if model_shape.is_xcomposer(config.to_dict()):
        geometry = model_shape.xcomposer_geometry(config.to_dict(), dtype_bytes)
    else:
        geometry = model_shape.native_geometry(config, dtype_bytes)
    layers = int(model_shape.text_config(config).num_hidden_layers)
    first = _first_device(model)
    return ModelMemorySpec(
        geometry=geometry, layers=layers, layers_by_device=_layers_by_device(model, layers), vision_device=first,
        head_device=_head_device(model, first), **_image_rules(config),
        attention=Attention.EAGER if getattr(config, "_attn_implementation", "") == "eager" else Attention.SDPA,
    )


def workload_from_query(query: Query, spec: ModelMemorySpec, *, text_tokens: int | None = None,
                        prompt_tokens: int | None = None, image_tokens: int | None = None) -> Workload:
    """The workload of `query` on this model. `prompt_tokens` / `image_tokens`: exact, from the backend's one
    encoding of the question (template and image tokens included in the prompt's); else `text_tokens` of the
    question (from the tokenizer; 3 per character when not given) and image tokens by the model's rules."""
    several = len(query.images) > 1
    if spec.image_tokens:
        per_image = [spec.image_tokens_several if several else spec.image_tokens] * len(query.images)
        vision = (spec.vision_tokens_several if several else spec.vision_tokens) * len(query.images)
    else:
        per_image = [max(1, math.ceil(img.width * img.height / max(spec.patch_pixels, 1))) for img in query.images]
        vision = sum(per_image) * spec.vision_tokens_per_image_token
    if image_tokens is None:
        image_tokens = sum(per_image)
    elif not spec.image_tokens:  # dynamic towers: the exact count sizes the vision tower's work too
        vision = image_tokens * spec.vision_tokens_per_image_token
    if prompt_tokens is None:
        question = text_tokens if text_tokens is not None else 3 * len(query.question)  # byte-level worst case
        prompt_tokens = question + memory_model.TEMPLATE_TOKENS + image_tokens
    return Workload(prompt_tokens=prompt_tokens, image_tokens=image_tokens, max_new_tokens=query.settings.max_new_tokens,
                    batch=query.settings.num_beams, vision_tokens=vision, attention=spec.attention)


def estimate_workload(workload: Workload, spec: ModelMemorySpec) -> MemoryEstimate:
    """The memory `workload` needs on each device the model sits on (the planner's formulas, then the margin)."""
    devices = {*spec.layers_by_device, spec.vision_device, spec.head_device}
    needs = {device: memory_model.device_need(
        spec.geometry, workload, layers=spec.layers_by_device.get(device, 0),
        vision=device == spec.vision_device, head=device == spec.head_device) for device in devices}
    g = spec.geometry
    return MemoryEstimate(
        workload=workload, device_needs=needs,
        need_bytes={device: memory_model.with_admission_margin(need) for device, need in needs.items()},
        kv_bytes_per_token=kv_cache_bytes(spec.layers, g.kv_heads, g.head_dim, 1, workload.batch, g.dtype_bytes),
    )


def estimate(query: Query, spec: ModelMemorySpec, text_tokens: int | None = None, *,
             prompt_tokens: int | None = None, image_tokens: int | None = None) -> MemoryEstimate:
    """The memory `query` needs on each device; the counts as workload_from_query() takes them."""
    return estimate_workload(workload_from_query(query, spec, text_tokens=text_tokens, prompt_tokens=prompt_tokens,
                                                 image_tokens=image_tokens), spec)


def _budget_bytes(max_memory_gb: str) -> list[float]:
    return [float(part) * GB for part in max_memory_gb.split(",") if part.strip()] if max_memory_gb else []


def free_bytes(max_memory_gb: str = "") -> dict[str, int]:
    """Free memory per device this process could use now: 'cuda:N' for each GPU, and 'cpu' (available RAM)."""
    free = {"cpu": int(psutil.virtual_memory().available)}
    budgets = _budget_bytes(max_memory_gb)
    for gpu in gpu_reader.read_cuda():
        allocated = gpu.allocated_bytes or 0
        usable: float = (gpu.free_bytes or 0) + ((gpu.reserved_bytes or 0) - allocated)
        if gpu.index < len(budgets):
            usable = min(usable, budgets[gpu.index] - allocated)
        free[f"cuda:{gpu.index}"] = int(max(usable, 0))
    return free


def _human(count: float) -> str:
    return f"{count / GB:.2f} GB" if count >= 0.1 * GB else f"{count / 2**20:.0f} MiB"


def refusal(query: Query, est: MemoryEstimate, device: str, free: int) -> str:
    """The analyst-facing message: both numbers, and which knob frees how much."""
    s = query.settings
    per_k = _human(est.kv_bytes_per_token * 1000)
    tips = [f"lower max new tokens (now {s.max_new_tokens}; each 1000 tokens need about {per_k})"]
    if est.workload.image_tokens:
        tips.append(f"use fewer or smaller images (now {len(query.images)} images, "
                    f"{est.workload.image_tokens} image tokens)")
    if s.num_beams > 1:
        tips.append(f"use 1 beam instead of {s.num_beams}")
    return (f"This question needs about {_human(est.need_bytes[device])} on {device}, but only "
            f"{_human(free)} is free there. To make it fit: " + "; ".join(tips) + ".")


class Admission:
    """Checks queries against the free memory of the devices a loaded local model sits on."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None, max_memory_gb: str = "") -> None:
        self.spec = spec_from_model(model)
        self._tokenizer = tokenizer
        self._max_memory_gb = max_memory_gb

    def estimate(self, encoded: EncodedQuery) -> MemoryEstimate:
        """From the encoding's exact counts; an encoding without them (XComposer) has its question tokenized."""
        if encoded.prompt_tokens is not None:
            return estimate(encoded.query, self.spec, prompt_tokens=encoded.prompt_tokens,
                            image_tokens=encoded.image_tokens)
        tokens = None
        if self._tokenizer is not None:
            tokens = len(self._tokenizer(encoded.query.question, add_special_tokens=False)["input_ids"])
        return estimate(encoded.query, self.spec, tokens)

    def free(self) -> dict[str, int]:
        return free_bytes(self._max_memory_gb)

    def check(self, encoded: EncodedQuery, free: dict[str, int] | None = None) -> MemoryEstimate:
        """Raise AdmissionError if any device lacks the memory; return the estimate otherwise."""
        est = self.estimate(encoded)
        available = free if free is not None else self.free()
        for device, need in est.need_bytes.items():
            have = available.get(device)
            if have is not None and need > have:
                raise AdmissionError(refusal(encoded.query, est, device, have))
        return est


def for_backend(backend: Backend, max_memory_gb: str = "") -> Admission | None:
    """An Admission for a backend that holds a local transformers model; None for remote backends."""
    model = getattr(backend, "model", None)
    if model is None or not hasattr(model, "config"):
        return None
    processor = getattr(backend, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None) or getattr(backend, "tokenizer", None)
    try:
        return Admission(model, tokenizer, max_memory_gb)
    except (AttributeError, TypeError, ValueError, ModelError):  # a config without the usual names: run unchecked
        return None
