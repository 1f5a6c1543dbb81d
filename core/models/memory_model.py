"""The one memory model: the bytes a question needs beside the weights, for the planner, the pre-flight check
and admission alike (they must agree, or admission refuses what the plan promised, or admits what will not fit).

Per device, need = KV cache of its decoder layers + the largest transient it sees. Transients happen one after
another (vision tower, then the decoder layers' prefill one layer at a time, then the logits), so the largest
is counted, not their sum. The planner adds the CUDA context per GPU (it plans before anything is loaded);
admission runs with the model loaded, so the context is already spent, and adds its margin instead.

Why these formulas (what transformers' Llama-style decoder layer allocates in a prefill, batch × T tokens):
- a layer: 4h + 3i values per token. 3i because SwiGLU's `down_proj(act(gate(x)) * up(x))` holds act(gate),
  up and their product at once before down_proj; 4h for the layer input kept as the residual, the normed input
  and RMSNorm's fp32 copy (two half-precision widths). The attention side (q, k, v, rotary copies, output)
  peaks lower than the MLP with sdpa or flash-attn, which never materialise the T × T scores.
- eager attention adds heads × T² scores: at `softmax(w, dtype=float32).to(dtype)` the half-precision scores,
  their fp32 softmax and its half-precision copy are alive together, 2 × dtype + 4 bytes per score.
- the vision tower runs with output_hidden_states, so every layer's hidden states (layers + 1) live until the
  projector, plus its MLP's intermediate (2 × vision_intermediate) per vision token.
- logits: generate() asks for the last position only (logits_to_keep=1) and copies it to fp32; so does Loupe's
  own InternLM-XComposer2.5 implementation (the model's remote code computed them for every prompt position).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CUDA_CONTEXT_BYTES = 500_000_000  # torch's CUDA context, cuBLAS workspace and allocator slack, per GPU
ADMISSION_MARGIN_FACTOR = 1.2  # admission's estimate errs high: allocator rounding, what the formulas leave out
ADMISSION_MARGIN_BYTES = 64 * 2**20  # CUDA workspaces a forward allocates beside the tensors counted
FP32_BYTES = 4
TEMPLATE_TOKENS = 64  # chat-template tokens around the question (role markers, separators, system text)


class Attention(StrEnum):
    """How a decoder layer computes attention, as far as memory goes."""

    SDPA = "sdpa"  # sdpa or flash-attn: the scores are never materialised
    EAGER = "eager"  # heads × prompt² scores per layer


@dataclass(frozen=True)
class Geometry:
    """The sizes of a model that decide its memory beside the weights, read from its config."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype_bytes: int
    vision_hidden: int = 0
    vision_intermediate: int = 0
    vision_layers: int = 0


@dataclass(frozen=True)
class Workload:
    """One question's size in tokens, exact (admission) or the largest allowed (the planner)."""

    prompt_tokens: int  # everything the prefill reads: chat template, question and image tokens
    image_tokens: int  # of prompt_tokens, those the images became
    max_new_tokens: int
    batch: int = 1  # sequences decoded side by side (num_beams)
    vision_tokens: int = 0  # tokens the vision tower encodes, every image and crop together
    attention: Attention = Attention.SDPA

    @property
    def context_tokens(self) -> int:
        """The KV cache's length: the prompt and every new token."""
        return self.prompt_tokens + self.max_new_tokens


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, batch: int, dtype_bytes: int) -> int:
    """Keys and values for every layer, head and token: 2 × layers × kv_heads × head_dim × tokens × batch × bytes."""
    return 2 * layers * kv_heads * head_dim * tokens * batch * dtype_bytes


@dataclass(frozen=True)
class DeviceNeed:
    """What one device needs for a workload beside its weights, before the CUDA context or any margin."""

    kv_cache_bytes: int
    transient_bytes: int  # the largest of: a layer's prefill, the vision tower, the logits


def layer_prefill_bytes(g: Geometry, w: Workload) -> int:
    """One decoder layer's transient during the prefill (see the module docstring for 4h + 3i and the scores)."""
    layer = w.batch * w.prompt_tokens * (4 * g.hidden + 3 * g.intermediate) * g.dtype_bytes
    if w.attention == Attention.EAGER:
        layer += w.batch * g.heads * w.prompt_tokens**2 * (2 * g.dtype_bytes + FP32_BYTES)
    return layer


def vision_tower_bytes(g: Geometry, w: Workload) -> int:
    """The vision tower's hidden states of every layer, plus its MLP intermediate, for every vision token."""
    return w.batch * w.vision_tokens * g.dtype_bytes * (g.vision_hidden * (g.vision_layers + 1)
                                                         + 2 * g.vision_intermediate)


def logits_bytes(g: Geometry, w: Workload) -> int:
    """The prefill's logits of the last position in the model's dtype and their fp32 copy."""
    return w.batch * g.vocab * (g.dtype_bytes + FP32_BYTES)


def device_need(g: Geometry, w: Workload, *, layers: int, vision: bool, head: bool) -> DeviceNeed:
    """The need of one device holding `layers` decoder layers, and the vision tower / the LM head if so."""
    transient = max(layer_prefill_bytes(g, w) if layers else 0, vision_tower_bytes(g, w) if vision else 0,
                    logits_bytes(g, w) if head else 0)
    return DeviceNeed(kv_cache_bytes(layers, g.kv_heads, g.head_dim, w.context_tokens, w.batch, g.dtype_bytes),
                      transient)


def with_admission_margin(need: DeviceNeed) -> int:
    """Admission's figure for a device: its need (KV cache + largest transient) × 1.2 + 64 MiB."""
    return int((need.kv_cache_bytes + need.transient_bytes) * ADMISSION_MARGIN_FACTOR + ADMISSION_MARGIN_BYTES)
