"""The shard planner: from a model's shape (its config alone) and what each GPU can hold, a ShardPlan.

Decisions, in the order they apply:
- Fewest GPUs: a model that fits on one GPU stays on one (the other cards stay free for other work);
  otherwise the first k GPUs that fit are used and the rest are listed as unused. "Fits" here means
  every GPU stays within HEADROOM (90%) of what it may use, because a prediction is an estimate; only
  when no number of GPUs achieves that is a plan up to 100% accepted.
- The vision tower, projector, input embeddings and anything else that is not a decoder layer, the final
  norm or the LM head go on the first GPU: images and tokens enter there. The final norm and the LM head
  go with the last layers (with the embeddings instead when the head shares their weight).
- Decoder layers are split in contiguous runs so that what stays in memory (weights, KV cache, CUDA
  context) is balanced: the fullest GPU, as a fraction of what it may use, is as empty as possible, among
  the splits where every GPU also has room for its largest transient. On two equal cards that is about
  half the layers each, GPU0 a little fewer for the vision tower. When no split fits, the plan minimises
  the largest predicted peak instead, so the refusal can say how far off it is.
- Reserve per GPU = the KV cache of its layers over the whole context (question + images + new tokens)
  + the largest transient it sees (one layer's prefill activations, the vision tower's hidden states on
  the first GPU, the logits on the last) + CUDA_CONTEXT_BYTES, all from core/models/memory_model.py, the
  model admission uses too. The workload is the largest question the settings allow (largest_workload).
- A pinned split from the settings ("0-15,16-31", GPU0 first) replaces the search; it must name every
  layer exactly once, in order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import ConfigError
from core.models import memory_model
from core.models.memory_model import CUDA_CONTEXT_BYTES, TEMPLATE_TOKENS, Attention, Workload
from core.models.model_shape import ModelShape
from core.records import GpuShare, ShardPlan
from core.setting_rules import parse_split

HEADROOM = 0.9  # fewer GPUs are used only if none of them is predicted above this share of its capacity


def largest_workload(shape: ModelShape, max_new_tokens: int = 1024, max_question_chars: int = 200, *,
                     batch: int = 1, attention: Attention = Attention.SDPA) -> Workload:
    """The largest question the reserve must hold: the longest question allowed (one character is at most one
    token) with the chat template, the model's largest images (its max_images), and `max_new_tokens`."""
    return Workload(prompt_tokens=max_question_chars + TEMPLATE_TOKENS + shape.image_tokens,
                    image_tokens=shape.image_tokens, max_new_tokens=max_new_tokens, batch=batch,
                    vision_tokens=shape.crops * shape.vision_tokens_per_crop, attention=attention)


# -- reserve arithmetic --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sizer:
    """Predicted bytes of one GPU's share, for a given shape and workload."""

    shape: ModelShape
    workload: Workload

    def share(self, index: int, lo: int, hi: int, *, first: bool, last: bool, capacity: int) -> GpuShare:
        s = self.shape
        parts = [p for p in s.parts if p.place == "first" and first] + [p for p in s.parts if p.place == "last" and last]
        need = memory_model.device_need(s.geometry, self.workload, layers=hi - lo, vision=first, head=last)
        return GpuShare(
            index=index, layers=(lo, hi - 1), modules=tuple(p.name for p in parts),
            weights_bytes=sum(s.layer_bytes[lo:hi]) + sum(p.nbytes for p in parts),
            kv_cache_bytes=need.kv_cache_bytes, activation_bytes=need.transient_bytes,
            context_bytes=CUDA_CONTEXT_BYTES, capacity_bytes=capacity,
        )


def _best_split(sizer: _Sizer, caps: Sequence[tuple[int, int]], *, peaks: bool) -> list[GpuShare]:
    """Contiguous runs of layers over these GPUs (each gets at least one) minimising the largest ratio to
    capacity: of what stays in memory among splits whose peaks fit (peaks=False), or of the peaks."""
    k, n = len(caps), sizer.shape.num_layers

    def share(j: int, lo: int, hi: int) -> GpuShare:
        return sizer.share(caps[j][0], lo, hi, first=j == 0, last=j == k - 1, capacity=caps[j][1])

    def ratio(j: int, lo: int, hi: int) -> float:
        g = share(j, lo, hi)
        if peaks:
            return g.predicted_bytes / max(g.capacity_bytes, 1)
        if g.predicted_bytes > g.capacity_bytes:
            return math.inf
        return (g.weights_bytes + g.kv_cache_bytes + g.context_bytes) / max(g.capacity_bytes, 1)

    # best[j][m]: (worst ratio, previous cut) covering layers [0, m) with GPUs 0..j
    best: list[dict[int, tuple[float, int]]] = [{m: (ratio(0, 0, m), 0) for m in range(1, n - k + 2)}]
    for j in range(1, k):
        row = {}
        for m in range(j + 1, n - k + j + 2):
            row[m] = min((max(best[j - 1][cut][0], ratio(j, cut, m)), cut) for cut in range(j, m))
        best.append(row)
    cuts, m = [], n
    for j in range(k - 1, -1, -1):
        cut = best[j][m][1]
        cuts.append((cut, m))
        m = cut
    return [share(j, lo, hi) for j, (lo, hi) in enumerate(reversed(cuts))]


def _fits(shares: list[GpuShare], share: float) -> bool:
    return all(g.predicted_bytes <= share * g.capacity_bytes for g in shares)


def plan(
    shape: ModelShape,
    capacities: Sequence[tuple[int, int]],
    workload: Workload | None = None,
    *,
    split: str = "",
    capacity_source: str = "free",
) -> ShardPlan:
    """Plan `shape` over the offered GPUs, given as (CUDA index, usable bytes), GPU0 first.

    Always returns a plan; `fits` says whether every GPU holds its share. When nothing fits, the plan is the
    best one over all offered GPUs, so the refusal can say how far off it is.
    """
    if not capacities:
        raise ValueError("plan() needs at least one GPU; the pre-flight check handles CPU-only machines")
    sizer = _Sizer(shape, workload or largest_workload(shape))
    caps = list(capacities)
    notes: list[str] = []
    if split:
        ranges = parse_split(split, shape.num_layers)
        if len(ranges) > len(caps):
            raise ConfigError(f"split names {len(ranges)} GPUs but {len(caps)} are available")
        shares = [sizer.share(caps[j][0], lo, hi + 1, first=j == 0, last=j == len(ranges) - 1, capacity=caps[j][1])
                  for j, (lo, hi) in enumerate(ranges)]
        notes.append(f"layer split pinned in the settings: {split}")
    else:
        most = min(len(caps), shape.num_layers)
        splits = [_best_split(sizer, caps[:k], peaks=False) for k in range(1, most + 1)]
        fitting = [s for s in splits if _fits(s, HEADROOM)] or [s for s in splits if _fits(s, 1.0)]
        shares = fitting[0] if fitting else _best_split(sizer, caps[:most], peaks=True)
    used = {g.index for g in shares}
    device_map: dict[str, int] = {}
    for g in shares:
        device_map.update({name: g.index for name in g.modules})
        device_map.update({f"{shape.layer_prefix}.{i}": g.index for i in range(g.layers[0], g.layers[1] + 1)})
    return ShardPlan(
        model=shape.name, dtype=shape.dtype, layer_prefix=shape.layer_prefix, gpus=tuple(shares),
        device_map=device_map, unused_gpus=tuple(i for i, _ in caps if i not in used),
        capacities=dict(caps), context_tokens=sizer.workload.context_tokens, image_tokens=sizer.workload.image_tokens,
        max_new_tokens=sizer.workload.max_new_tokens, batch=sizer.workload.batch,
        fits=all(g.predicted_bytes <= g.capacity_bytes for g in shares), pinned=bool(split),
        capacity_source=capacity_source, notes=tuple(notes),
    )
