"""Whether a loaded model can take the fast decode path (core/models/fast_decode.py), and how long its static
KV cache is: decided from the model's own config and placement, before any fast-path code is built."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel

    from core.models.decode_attention import DecodeAttention
    from core.models.fast_decode import FastDecoder

    class GenerativeModel(PreTrainedModel, GenerationMixin):
        """What AutoModelForImageTextToText loads (PreTrainedModel no longer brings generate() by itself)."""

D = TypeVar("D", bound="FastDecoder")

# Qwen2-VL's and Qwen2.5-VL's text decoders are Qwen2 with multimodal RoPE (uses_mrope; FastDecoder.prefill).
MROPE_DECODERS = ("qwen2_vl_text", "qwen2_5_vl_text")
SUPPORTED_DECODERS = ("llama", "mistral", "internlm2", "qwen2", *MROPE_DECODERS)


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
    if len(devices) > 1 and any(device.type != "cuda" for device in devices):
        # Offloaded weights (accelerate's "cpu" or "disk": meta tensors loaded on the fly) cannot be fused.
        return FastPathStatus(False, "part of the decoder is offloaded to the CPU or disk")
    if len(devices) > 1:  # a compiled step per device (decode_stages.py)
        return FastPathStatus(True, f"static KV cache + a compiled decode step per GPU ({len(devices)} GPUs)")
    return FastPathStatus(True, "static KV cache + compiled decode step")


def build_and_warm(make: Callable[[DecodeAttention], D], attention: DecodeAttention, reason: str,
                   report: Callable[[str], object]) -> tuple[D | None, str]:
    """Build a backend's fast decoder with `attention` and compile it now (no question pays for compilation);
    returns it and the model card's line. With "auto", a decoder whose split-KV kernel fails to build (another
    GPU or Triton than measured) is built again with FlexAttention, and the card says why. If building or
    compiling still fails, the model answers through generate() and the card says why: a fast path that cannot
    be built must never leave a model unable to answer."""
    from core.models.decode_attention import DecodeAttention

    tries = [attention, DecodeAttention.FLEX] if attention is DecodeAttention.AUTO else [attention]
    failures: list[str] = []
    for choice in tries:
        decoder = None
        try:
            decoder = make(choice)
            seconds = decoder.warm_up(report)
        except Exception as exc:  # noqa: BLE001 - whatever failed, generate() still answers
            the_kernel = decoder is not None and decoder.attention is DecodeAttention.SPLIT
            if decoder is not None:
                decoder.close()
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            if the_kernel and choice is not tries[-1]:
                continue
            return None, f"off: it failed to build ({failures[-1]}); generate() answers"
        # On the CPU the step is not compiled (CUDA graphs need a GPU): the card must not claim it is.
        how = reason if decoder.compiled else "static KV cache, decode step not compiled (CPU)"
        rows = f", {decoder.rows} rows" if decoder.rows > 1 else ""
        fell_back = f"; the split-KV kernel failed to build ({failures[0]})" if failures else ""
        return decoder, f"{how}, {decoder.attention} attention{rows} (ready in {seconds:.1f} s){fell_back}"
    raise AssertionError("unreachable: the last try returns")


def cache_length(max_position_embeddings: int, wanted: int) -> int:
    """The static cache bucket: the wanted length rounded up to 512, within the model's positions."""
    return min(max_position_embeddings, int(math.ceil(wanted / 512) * 512))


def attention_window(config: Any) -> int | None:
    """The sliding window some of the decoder's layers attend within (Mistral's `sliding_window`; Qwen2's only
    where its `layer_types` name sliding layers), or None where every layer sees the whole sequence."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not window or (types is not None and "sliding_attention" not in types):
        return None
    return int(window)


def uses_mrope(config: Any) -> bool:
    """Whether the decoder rotates by multimodal (3-D) positions: Qwen2-VL's and Qwen2.5-VL's M-RoPE (their rotary
    embedding applies it with a default section where the config names none)."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return getattr(config, "model_type", "") in MROPE_DECODERS or "mrope_section" in rope


def cache_tokens(config: Any, wanted: int) -> tuple[int, str]:
    """The fast path's cache length per row for a decoder `config`, and what the model card adds about it.
    The fast path attends to every cached position: with a sliding window shorter than the cache, the cache is
    capped at the window (a multiple of 128, FlexAttention's block), where the window never cuts anything off;
    longer questions take generate(), which applies the window."""
    length = cache_length(getattr(config, "max_position_embeddings", wanted), wanted)
    window = attention_window(config)
    if window is None or window >= length:
        return length, ""
    capped = window - window % 128 if window >= 128 else window
    return capped, f"; cache capped at the model's {window}-token sliding window (longer questions use generate())"


def fuse_linears(linears: list[Any]) -> tuple[Any, Any]:
    """One weight (and bias) holding all of `linears` (torch Linear layers); each one's parameters become views
    into it, so the model's own modules read the same memory (no second copy)."""
    import torch

    weight = torch.cat([lin.weight.data for lin in linears], dim=0)
    has_bias = all(lin.bias is not None for lin in linears)
    bias = torch.cat([lin.bias.data for lin in linears]) if has_bias else None
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = weight[start : start + rows]
        if bias is not None:
            lin.bias.data = bias[start : start + rows]
        start += rows
    return weight, bias


class _Captured(Exception):
    """Raised from the language model's pre-hook to stop the forward once inputs_embeds are known."""

    def __init__(self, embeds: Any, position_ids: Any) -> None:
        self.embeds = embeds
        self.position_ids = position_ids


def _capture(_module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        raise RuntimeError("the language model was called without inputs_embeds")
    raise _Captured(embeds, kwargs.get("position_ids"))


def capture_prompt(model: Any, lm: Any, inputs: Any) -> tuple[Any, Any]:
    """The embeddings `model`'s own forward hands its language model `lm` for `inputs` (vision tower and merge
    included), and the position ids it hands with them (None where it leaves them to the language model; Qwen2-VL's
    3-D M-RoPE positions), the forward stopped there by a pre-hook: every VLM whose decoder is Llama-shaped gets
    its own image handling unchanged."""
    handle = lm.register_forward_pre_hook(_capture, with_kwargs=True)
    try:
        model(**inputs)
        raise RuntimeError("the language model was never called during prefill")
    except _Captured as captured:
        return captured.embeds, captured.position_ids
    finally:
        handle.remove()
