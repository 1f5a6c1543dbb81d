"""Admission: before a question runs, estimate the memory it needs and refuse it when that is not free.

Need, per device that holds decoder layers (an estimate that errs high):
- KV cache for the layers on that device: 2 × layers × kv_heads × head_dim × tokens × batch × dtype bytes,
  with tokens = prompt tokens (text + image tokens) + max_new_tokens, and batch = num_beams; the prompt's
  tokens are the exact counts of the backend's one encoding of the question (EncodedQuery) when it has them;
- the largest transient activation of one decoder layer during prefill (hidden states, attention
  projections and the MLP's intermediate for the whole prompt; the T×T score matrix only for eager attention);
- on the device of the vision tower, its activations for the images; on the device of the head, the logits
  (for every prompt position with XComposer2.5's remote code, whose image bounds follow the planner's:
  24 crops for one image, 6 each for several — core/models/model_shape.py);
- then × 1.2 and + 64 MiB for allocator rounding, CUDA workspaces and what the formula leaves out.
Free, per GPU: what CUDA reports free plus what PyTorch's cache holds unused, and, when the planner's
budget `max_memory_gb` is set, at most that budget minus what this process has allocated there.
On CPU the need is compared with the RAM the system reports available.
A refusal is an AdmissionError (a QuestionError: the fix is to ask a smaller question) that says what to reduce.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil

from core.backends.base import EncodedQuery
from core.errors import AdmissionError
from core.models import model_shape
from core.records import Query

GB = 1e9
_MARGIN_FACTOR = 1.2
_MARGIN_BYTES = 64 * 2**20
_UNKNOWN_PATCH_PIXELS = 14 * 28
_TEMPLATE_TOKENS = 64  # chat-template tokens around the question (role markers, separators)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, batch: int, dtype_bytes: int) -> int:
    """Keys and values for every layer, head and token: 2 × layers × kv_heads × head_dim × tokens × batch × bytes."""
    return 2 * layers * kv_heads * head_dim * tokens * batch * dtype_bytes


@dataclass(frozen=True)
class ModelMemorySpec:
    """The sizes that decide a question's memory, read once from a loaded model's config and device map."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int
    layers_by_device: dict[str, int]  # "cuda:0" → decoder layers it holds; "cpu" when on CPU
    vision_device: str
    head_device: str
    image_tokens: int  # per image when the question has one, for fixed-size towers; 0 = from the image size
    image_tokens_several: int  # per image when it has several (XComposer2.5 drops from 24 crops to 6 each)
    patch_pixels: int  # pixels per image token for dynamic-resolution towers (e.g. 28×28 for Qwen2-VL)
    vision_bytes_per_token: int  # the vision tower's transient bytes per image token
    eager_attention: bool
    full_logits: bool = False  # the forward computes logits for every prompt position (XComposer's remote code)


@dataclass(frozen=True)
class MemoryEstimate:
    """What one question is estimated to need, per device, and the token counts behind it."""

    need_bytes: dict[str, int]
    prompt_tokens: int
    image_tokens: int
    total_tokens: int
    kv_bytes_per_token: int  # over all layers and beams, for the "what to reduce" advice


def _device_name(device: Any) -> str:
    text = str(device)
    if text.isdigit():
        return f"cuda:{text}"
    return "cuda:0" if text == "cuda" else text


def _layers_by_device(model: Any, layers: int) -> dict[str, int]:
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


def _head_device(model: Any, fallback: str) -> str:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return _device_name(weight.device if weight is not None else fallback)


def _xcomposer_images(dtype_bytes: int, vision_config: dict[str, Any]) -> dict[str, int]:
    """XComposer2.5's image bounds, as the planner counts them (core/models/model_shape.py): h×w 560-px crops plus a
    global view, 2×2-merged to 400 tokens each, a separator per row; every ViT layer's states kept."""
    vision = {**model_shape.XCOMPOSER_VISION, **vision_config}
    grid = vision["image_size"] // vision["patch_size"]

    def tokens(hd: int) -> int:
        return (hd + 1) * (grid // 2) ** 2 + 1 + (hd + 1) * (grid // 2)

    per_crop = (grid * grid + 1) * dtype_bytes * (
        vision["hidden_size"] * (vision["num_hidden_layers"] + 1) + 2 * vision["intermediate_size"])
    return {"image_tokens": tokens(model_shape.XCOMPOSER_HD_NUM),
            "image_tokens_several": tokens(model_shape.XCOMPOSER_MULTI_HD_NUM),
            "vision_bytes_per_token": math.ceil(per_crop / (grid // 2) ** 2)}


def spec_from_model(model: Any) -> ModelMemorySpec:
    """Read a transformers model's text and vision configs (LLaVA, Qwen2-VL, InternLM2-style, XComposer2.5)."""
    config = model.config
    text = getattr(config, "text_config", None) or getattr(config, "llm_config", None) or config
    vision = getattr(config, "vision_config", None)
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    layers = int(text.num_hidden_layers)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    image_tokens = int(getattr(config, "image_seq_length", 0) or 0)
    # An unknown tower: one token per 392 pixels, high for Qwen2-VL-like towers (784), near XComposer2.5's crops.
    patch_pixels = 0 if image_tokens else _UNKNOWN_PATCH_PIXELS
    if vision is not None and not image_tokens:
        patch = int(getattr(vision, "patch_size", 14) or 14)
        merge = int(getattr(vision, "spatial_merge_size", 1) or 1)
        if getattr(vision, "image_size", None) and merge == 1:
            image_tokens = (int(vision.image_size) // patch) ** 2
        else:
            patch_pixels = (patch * merge) ** 2
    first = str(getattr(model, "device", "cpu"))
    dtype_bytes = int(getattr(getattr(model, "dtype", None), "itemsize", 4) or 4)
    images: dict[str, int] = {"image_tokens": image_tokens, "image_tokens_several": image_tokens,
                              "vision_bytes_per_token": 8 * dtype_bytes * max(
                                  int(getattr(vision, "hidden_size", 0) or 0), hidden)}
    xcomposer = str(getattr(config, "model_type", "")).lower() in model_shape.XCOMPOSER_TYPES
    if xcomposer:
        vision_dict = vision if isinstance(vision, dict) else getattr(vision, "to_dict", dict)()
        images = _xcomposer_images(dtype_bytes, vision_dict or {})
    return ModelMemorySpec(
        layers=layers, heads=heads, kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=head_dim, hidden=hidden, intermediate=int(getattr(text, "intermediate_size", 4 * hidden)),
        vocab=int(getattr(text, "vocab_size", 0) or getattr(config, "vocab_size", 0) or 0),
        dtype_bytes=dtype_bytes, layers_by_device=_layers_by_device(model, layers),
        vision_device=_device_name(first), head_device=_head_device(model, first), patch_pixels=patch_pixels,
        eager_attention=getattr(config, "_attn_implementation", "") == "eager", full_logits=xcomposer, **images,
    )


def estimate(query: Query, spec: ModelMemorySpec, text_tokens: int | None = None, *,
             prompt_tokens: int | None = None, image_tokens: int | None = None) -> MemoryEstimate:
    """The memory `query` needs on each device. `prompt_tokens` / `image_tokens`: the exact counts of the
    backend's encoding when it has them; else `text_tokens` (the question's) and image tokens from the spec."""
    question_tokens = text_tokens if text_tokens is not None else 3 * len(query.question)  # byte-level worst case
    if image_tokens is None:
        if spec.image_tokens:
            alone = len(query.images) == 1
            per_image = [spec.image_tokens if alone else spec.image_tokens_several] * len(query.images)
        else:
            per_image = [max(1, math.ceil(img.width * img.height / max(spec.patch_pixels, 1))) for img in query.images]
        image_tokens = sum(per_image)
    prompt = prompt_tokens if prompt_tokens is not None else question_tokens + image_tokens + _TEMPLATE_TOKENS
    batch = query.settings.num_beams
    total = prompt + query.settings.max_new_tokens
    per_layer_token = kv_cache_bytes(1, spec.kv_heads, spec.head_dim, 1, batch, spec.dtype_bytes)
    activation = prompt * batch * (4 * spec.hidden + 2 * spec.intermediate) * spec.dtype_bytes
    if spec.eager_attention:
        activation += prompt * prompt * batch * spec.heads * spec.dtype_bytes
    need: dict[str, float] = {}
    for device, layers in spec.layers_by_device.items():
        need[device] = layers * per_layer_token * total + activation
    vision = image_tokens * spec.vision_bytes_per_token
    need[spec.vision_device] = need.get(spec.vision_device, 0) + vision
    logits = batch * (prompt if spec.full_logits else 2) * spec.vocab * (spec.dtype_bytes + 4)  # half + fp32 copy
    need[spec.head_device] = need.get(spec.head_device, 0) + logits
    return MemoryEstimate(
        need_bytes={device: int(value * _MARGIN_FACTOR + _MARGIN_BYTES) for device, value in need.items()},
        prompt_tokens=prompt, image_tokens=image_tokens, total_tokens=total,
        kv_bytes_per_token=per_layer_token * spec.layers,
    )


def _budget_bytes(max_memory_gb: str) -> list[float]:
    return [float(part) * GB for part in max_memory_gb.split(",") if part.strip()] if max_memory_gb else []


def free_bytes(max_memory_gb: str = "") -> dict[str, int]:
    """Free memory per device this process could use now: 'cuda:N' for each GPU, and 'cpu' (available RAM)."""
    free = {"cpu": int(psutil.virtual_memory().available)}
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return free
    budgets = _budget_bytes(max_memory_gb)
    for index in range(torch.cuda.device_count()):
        cuda_free, _total = torch.cuda.mem_get_info(index)
        allocated = torch.cuda.memory_allocated(index)
        usable = cuda_free + (torch.cuda.memory_reserved(index) - allocated)
        if index < len(budgets):
            usable = min(usable, budgets[index] - allocated)
        free[f"cuda:{index}"] = int(max(usable, 0))
    return free


def _human(count: float) -> str:
    return f"{count / GB:.2f} GB" if count >= 0.1 * GB else f"{count / 2**20:.0f} MiB"


def refusal(query: Query, est: MemoryEstimate, device: str, free: int) -> str:
    """The analyst-facing message: both numbers, and which knob frees how much."""
    s = query.settings
    per_k = _human(est.kv_bytes_per_token * 1000)
    tips = [f"lower max new tokens (now {s.max_new_tokens}; each 1000 tokens need about {per_k})"]
    if est.image_tokens:
        tips.append(f"use fewer or smaller images (now {len(query.images)} images, {est.image_tokens} image tokens)")
    if s.num_beams > 1:
        tips.append(f"use 1 beam instead of {s.num_beams}")
    return (f"This question needs about {_human(est.need_bytes[device])} on {device}, but only "
            f"{_human(free)} is free there. To make it fit: " + "; ".join(tips) + ".")


class Admission:
    """Checks queries against the free memory of the devices a loaded local model sits on."""

    def __init__(self, model: Any, tokenizer: Any = None, max_memory_gb: str = "") -> None:
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


def for_backend(backend: Any, max_memory_gb: str = "") -> Admission | None:
    """An Admission for a backend that holds a local transformers model; None for remote backends."""
    model = getattr(backend, "model", None)
    if model is None or not hasattr(model, "config"):
        return None
    processor = getattr(backend, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None) or getattr(backend, "tokenizer", None)
    try:
        return Admission(model, tokenizer, max_memory_gb)
    except (AttributeError, TypeError, ValueError):  # a config without the usual names: run unchecked
        return None
