"""Several prompts prefilled in one pass over the decoder's layers (a packed prefill), each into its own row.

Why: a prefill runs every layer's eager kernels, about 30 a layer, whatever the number of tokens; a question
after a shared prefix (shared_prefix.py) is a handful of tokens, so its prefill is launch-bound. Admitted
one by one, 8 questions that arrive together cost the running rows 8 such passes (on the H200 the batcher
loop spent 0.50 s of 1.79 s admitting: bench/results/concurrent_decode_cuda.json), and Compare's 4 templates
4 passes. Packed, every projection runs once over all the prompts' tokens; what is per prompt is a few index
tensors, built once for the whole pass.
How (`plan` on the host, then one pass):
- each prompt, in order, takes the longest prefix it shares with a running row or an earlier prompt of the
  same pass (shared_prefix.best_source); its other tokens are computed. A prompt that shares nothing runs the
  model's own forward up to the language model (vision tower, merged embeddings: FastDecoder.capture_embeds);
- the computed tokens of every prompt, concatenated: [1, ΣT, hidden], each at its own position; prompts
  computed whole come first, then those continuing a shared prefix;
- per layer: the fresh K/V go into their rows (one index_put each); then every shared prefix is copied into
  its row (one gather and one index_put each), its source resolved position by position, so a prompt may
  copy from one prefilled in the same pass (whose K/V for this layer were just written) or from one that
  itself copied; then attention: a whole prompt attends causally to its own fresh tokens (SDPA per prompt,
  as a single prefill does); all the continuing prompts together attend to their rows' positions, gathered
  from the cache, under one mask (same row, position not after the query's);
- each prompt's first token from its last position, with its row's repetition penalty and seen tokens.
Exactness: a prompt's tokens attend only to its own positions, so its K/V and first token are what it gets
alone; matrix products over more rows may round differently in the last bit (the float32 tests compare ids).
Memory: the pass holds activations for ΣT tokens. Every prompt in it was admitted with its own prompt's
transient reserved (core/serving/admission.py), and that transient is linear in tokens (attention here never
materialises the T × T scores of a whole prompt), so the pass needs no more than was reserved.
Failure: the caller (the batcher) retries the prompts one by one, so a prompt fails for its own fault only.
Decoders whose prefill is not this one (XComposer's Partial-LoRA: `packs_prefills` False) prefill each prompt
alone through their own `prefill`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from core.models.shared_prefix import best_source

if TYPE_CHECKING:
    from core.models.fast_decode import FastDecoder


@dataclass(frozen=True)
class Segment:
    """One prompt in a pass: positions [start, length) computed into `row`; [0, start) copied from `source`."""

    row: int
    start: int
    length: int
    source: int | None = None


@dataclass(frozen=True)
class PackedPlan:
    """A pass's index tensors (on the device), built once and read by every layer."""

    segments: tuple[Segment, ...]  # in packed order: whole prompts first
    positions: torch.Tensor  # [ΣT] each computed token's position
    token_rows: torch.Tensor  # [ΣT] each computed token's row
    whole_tokens: int  # the first whole_tokens tokens belong to whole prompts
    copy: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None  # dst rows, dst pos, src rows, src pos
    keys: tuple[torch.Tensor, torch.Tensor] | None  # continuing prompts' rows and positions, gathered for attention
    mask: torch.Tensor | None  # [tokens of continuing prompts, keys]
    last: torch.Tensor  # [prompts] each prompt's last token in the pass
    rows: torch.Tensor  # [prompts] each prompt's row

    def to(self, device: torch.device) -> PackedPlan:
        """The same plan with its tensors on `device` (a split decoder's stage: decode_stages.py)."""
        def moved(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device)
            return tuple(moved(v) for v in value) if isinstance(value, tuple) else value
        return dataclasses.replace(self, **{f.name: moved(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if f.name != "segments"})

    @classmethod
    def single(cls, device: torch.device, row: int, length: int) -> PackedPlan:
        """One whole prompt (FastDecoder.prefill)."""
        return build(device, (Segment(row, 0, length),))


def _resolved(by_row: Mapping[int, Segment], source: int, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Where positions [lo, hi) of `source`'s prompt are held when the copy runs: (row, lo, hi) ranges. A
    source prefilled in the same pass holds its computed positions; its own prefix is its source's."""
    segment = by_row.get(source)
    if segment is None or lo >= hi:
        return [(source, lo, hi)] if lo < hi else []
    ranges = []
    if lo < segment.start:
        assert segment.source is not None
        ranges += _resolved(by_row, segment.source, lo, min(hi, segment.start))
    if hi > segment.start:
        ranges.append((segment.row, max(lo, segment.start), hi))
    return ranges


def build(device: torch.device, segments: Sequence[Segment]) -> PackedPlan:
    """The index tensors of a pass over `segments` (whole prompts first), in one host-to-device copy."""
    order = sorted(segments, key=lambda s: s.start > 0)  # stable: whole prompts first, each kind in order
    by_row = {s.row: s for s in order}
    positions: list[int] = []
    token_rows: list[int] = []
    last: list[int] = []
    copy: list[list[int]] = [[], [], [], []]
    key_rows: list[int] = []
    key_pos: list[int] = []
    key_seg: list[int] = []
    query_seg: list[int] = []
    query_pos: list[int] = []
    for number, s in enumerate(order):
        positions += range(s.start, s.length)
        token_rows += [s.row] * (s.length - s.start)
        last.append(len(positions) - 1)
        if s.start:
            assert s.source is not None
            for src, lo, hi in _resolved(by_row, s.source, 0, s.start):
                copy[0] += [s.row] * (hi - lo)
                copy[1] += range(lo, hi)
                copy[2] += [src] * (hi - lo)
                copy[3] += range(lo, hi)
            key_rows += [s.row] * s.length
            key_pos += range(s.length)
            key_seg += [number] * s.length
            query_seg += [number] * (s.length - s.start)
            query_pos += range(s.start, s.length)
    whole_tokens = sum(s.length for s in order if not s.start)
    parts = [positions, token_rows, last, [s.row for s in order], *copy, key_rows, key_pos, key_seg, query_seg,
             query_pos]
    flat = torch.tensor([v for part in parts for v in part], dtype=torch.long)
    if device.type == "cuda":  # pinned, so the copy waits for no step still running on the GPU
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True)
    (positions_t, rows_t, last_t, order_rows, dst_r, dst_p, src_r, src_p, key_r, key_p, key_s, query_s,
     query_p) = flat.split([len(part) for part in parts])
    mask = None
    if key_rows:  # same prompt, and the key's position not after the query's
        mask = (query_s[:, None] == key_s[None, :]) & (key_p[None, :] <= query_p[:, None])
    return PackedPlan(tuple(order), positions_t, rows_t, whole_tokens, (dst_r, dst_p, src_r, src_p) if copy[0] else None,
                      (key_r, key_p) if key_rows else None, mask, last_t, order_rows)


def attend_prompts(fast: FastDecoder, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           plan: PackedPlan) -> torch.Tensor:
    """One layer's prefill attention over a pass: q [1, heads, ΣT, d], k/v [1, kv heads, ΣT, d] (fresh, RoPE'd);
    writes the rows' caches; returns [1, ΣT, heads × d]."""
    k_cache, v_cache = fast.k_cache[layer], fast.v_cache[layer]
    k_cache[plan.token_rows, :, plan.positions] = k[0].transpose(0, 1)
    v_cache[plan.token_rows, :, plan.positions] = v[0].transpose(0, 1)
    if plan.copy is not None:
        dst_r, dst_p, src_r, src_p = plan.copy
        k_cache[dst_r, :, dst_p] = k_cache[src_r, :, src_p]
        v_cache[dst_r, :, dst_p] = v_cache[src_r, :, src_p]
    # K/V repeated per query head, as transformers' own sdpa path does: its causal SDPA is a fused (flash /
    # memory-efficient) kernel, where enable_gqa may fall back to the math kernel.
    groups = fast.n_heads // fast.n_kv
    outs, start = [], 0
    for s in plan.segments:
        if s.start:
            break
        end = start + s.length
        outs.append(F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, start:end].repeat_interleave(groups, dim=1),
            v[:, :, start:end].repeat_interleave(groups, dim=1), is_causal=True))
        start = end
    if plan.keys is not None:
        key_r, key_p = plan.keys
        keys = k_cache[key_r, :, key_p].transpose(0, 1)[None].repeat_interleave(groups, dim=1)
        values = v_cache[key_r, :, key_p].transpose(0, 1)[None].repeat_interleave(groups, dim=1)
        outs.append(F.scaled_dot_product_attention(q[:, :, plan.whole_tokens:], keys, values, attn_mask=plan.mask))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).reshape(1, q.shape[2], q.shape[1] * q.shape[3])


@dataclass(frozen=True)
class Prefilled:
    """The prompts of a pass, in the order given: their lengths, the positions each copied (0: none) and their
    first tokens [prompts] (on the device)."""

    lengths: tuple[int, ...]
    shared: tuple[int, ...]
    firsts: torch.Tensor


@torch.no_grad()
def prefill_prompts(fast: FastDecoder, prompts: Sequence[tuple[int, dict[str, Any]]],
                    holders: Iterable[tuple[int, Mapping[str, Any]]], penalty: torch.Tensor,
                    on_forward: Callable[[object], object] | None = None) -> Prefilled:
    """Prefill each (row, inputs) of `prompts` into its row in one pass (the module docstring), copying prefixes
    from `holders` (rows holding a prompt) where they share one. `penalty`: [decoder rows, 1]. `on_forward` is
    told the inputs whose model forward (vision tower) runs now, then None. The prompts' last hidden states are
    `fast._prefill_hidden` until their first tokens are taken, then dropped (a failure drops them too)."""
    if not fast.packs_prefills:
        return _one_by_one(fast, prompts, penalty, on_forward)
    candidates = list(holders)
    segments, embeds = [], {}
    try:
        for row, inputs in prompts:
            ids = inputs["input_ids"][0].to(fast.device)
            source = best_source(fast, inputs, candidates)
            if source is None:
                if on_forward is not None:
                    on_forward(inputs)
                embeds[row] = fast.capture_embeds(inputs)
                length, start = embeds[row].shape[1], 0
            else:
                length, start = ids.shape[0], source[1]
                embeds[row] = fast.lm.embed_tokens(ids[start:])[None].to(fast.dtype)
            if length >= fast.max_len:
                raise ValueError(f"the prompt ({length} tokens) does not fit the {fast.max_len}-token cache")
            fast._mark_prompt_seen(row, ids)
            segments.append(Segment(row, start, length, None if source is None else source[0]))
            candidates.append((row, inputs))
    finally:
        if on_forward is not None:
            on_forward(None)
    plan = build(fast.device, segments)
    x = torch.cat([embeds[s.row] for s in plan.segments], dim=1)
    try:
        hidden = fast._prefill_layers(x, plan)
        fast._prefill_hidden = hidden[0, plan.last][:, None]
        firsts = fast._next_tokens(fast._prefill_hidden, penalty[plan.rows], which=plan.rows)
    finally:
        fast._prefill_hidden = None
    by_row = {s.row: (s, first) for s, first in zip(plan.segments, firsts)}
    return Prefilled(tuple(by_row[row][0].length for row, _ in prompts), tuple(by_row[row][0].start for row, _ in prompts),
                     torch.stack([by_row[row][1] for row, _ in prompts]))


def _one_by_one(fast: FastDecoder, prompts: Sequence[tuple[int, dict[str, Any]]], penalty: torch.Tensor,
                on_forward: Callable[[object], object] | None) -> Prefilled:
    lengths, firsts = [], []
    try:
        for row, inputs in prompts:
            if on_forward is not None:
                on_forward(inputs)
            lengths.append(fast.prefill(inputs, row=row))
            assert fast._prefill_hidden is not None
            firsts.append(fast._next_tokens(fast._prefill_hidden, penalty[row : row + 1], first_row=row)[0])
    finally:
        fast._prefill_hidden = None
        if on_forward is not None:
            on_forward(None)
    return Prefilled(tuple(lengths), (0,) * len(lengths), torch.stack(firsts))
