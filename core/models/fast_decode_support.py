"""Whether a loaded model can take the fast decode path (core/models/fast_decode.py), and how long its static
KV cache is: decided from the model's own config and placement, before any fast-path code is built."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel

    class GenerativeModel(PreTrainedModel, GenerationMixin):
        """What AutoModelForImageTextToText loads (PreTrainedModel no longer brings generate() by itself)."""

SUPPORTED_DECODERS = ("llama", "mistral", "internlm2", "qwen2")


@dataclass(frozen=True)
class FastPathStatus:
    """Whether the fast path is available for a loaded model, and if not, why (shown in the model card)."""

    enabled: bool
    reason: str


def language_model(model: Any) -> Any:
    """The VLM's language model (None when this architecture keeps none where LLaVA-style models do)."""
    inner = getattr(model, "model", model)
    return getattr(inner, "language_model", None)


def check(model: Any) -> FastPathStatus:
    """Whether the fast path (core/models/fast_decode.py) can run this loaded model, and if not why."""
    lm = language_model(model)
    if lm is None or not hasattr(lm, "layers") or not hasattr(model, "lm_head"):
        return FastPathStatus(False, "this architecture has no Llama-shaped language model")
    config = lm.config
    if config.model_type not in SUPPORTED_DECODERS:
        return FastPathStatus(False, f"decoder type {config.model_type} is not supported by the fast path")
    rope = getattr(config, "rope_scaling", None)
    if rope and rope.get("rope_type", "default") not in ("default", "linear", "llama3", "dynamic"):
        return FastPathStatus(False, "unsupported rope scaling")
    devices = {p.device for p in lm.parameters()} | {model.lm_head.weight.device}
    if len(devices) > 1:
        return FastPathStatus(False, "the decoder is split over several devices")
    return FastPathStatus(True, "static KV cache + compiled decode step")


def cache_length(max_position_embeddings: int, wanted: int) -> int:
    """The static cache bucket: the wanted length rounded up to 512, within the model's positions."""
    return min(max_position_embeddings, int(math.ceil(wanted / 512) * 512))
