"""Attention for the fast path's decode step: one new query per row against that row's filled cache.

Three kinds, the same arithmetic (chosen by the `decode_attention` setting; "auto" by default: split where the
step is compiled on a GPU, flex there if the split kernel cannot be built, sdpa on the CPU):
- "split": Loupe's own split-KV Triton kernel over each row's filled positions (split_decode_attention.py):
  one kernel and one small combine per layer where FlexAttention takes two larger ones. Needs a GPU (Triton);
  on a CPU it runs as sdpa, unless Triton's interpreter is on (TRITON_INTERPRET=1, the CPU tests).
- "flex": FlexAttention's decoding kernel over a block mask that holds only the filled
  blocks of each row (`kv_idx <= pos[row]`), so a token reads what the row has written, never a fixed bucket.
  Measured on an H200 (7B-shaped, ../shared/gpu-runs/2026-12-01-h200/decode_attention_variants.json): 180.7
  tok/s against 162.2 for the masked SDPA over a 2048 bucket, whose 8 KV heads gave 132 SMs too few blocks.
  The block mask is built inside the compiled step from the positions (two tiny tensors), so one graph serves
  every length and there are no buckets to compile.
  Inside Loupe on the H200 (bench/results/decode_compile_variants_cuda.json): 208.7 tok/s with the next step
  launched before a token is read, 176.9 without; bench/results/decode_speed_cuda.json has the engine's run.
- "sdpa": a masked scaled_dot_product_attention over a bucket of the cache, each KV group's query heads folded
  into the query-length axis (with a mask, enable_gqa falls back to the slow bf16 math kernel). The path
  measured on the H200 (155 tok/s, bench/results/decode_speed_cuda.json), and the CPU's (FlexAttention runs
  unfused there).
Rows are independent: each has its own position, so rows of different lengths decode in one step.
"""
from __future__ import annotations

import os
from enum import StrEnum
from typing import Any, cast

import torch
import torch.nn.functional as F

FLEX_BLOCK = 128  # FlexAttention's KV block; the cache length is a multiple of 512 (fast_decode_support)


class DecodeAttention(StrEnum):
    AUTO = "auto"
    FLEX = "flex"
    SDPA = "sdpa"
    SPLIT = "split"

    def resolved(self, compiled_on_cuda: bool) -> DecodeAttention:
        """AUTO as the decoder runs it: flex where its step is compiled on a GPU, sdpa elsewhere (flex runs
        unfused, op by op, when not compiled). SPLIT needs Triton on a GPU (or its interpreter)."""
        if self is DecodeAttention.SPLIT and not compiled_on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            return DecodeAttention.SDPA
        if self is not DecodeAttention.AUTO:
            return self
        return DecodeAttention.SPLIT if compiled_on_cuda else DecodeAttention.SDPA

    @property
    def reads_filled_only(self) -> bool:
        """Whether a step reads only each row's filled positions (then one graph serves every length)."""
        return self in (DecodeAttention.FLEX, DecodeAttention.SPLIT)


class DecodeAttentionInputs:
    """What every layer's attention shares in one step: the mask (sdpa) or the block mask (flex)."""

    def __init__(self, kind: DecodeAttention, max_len: int, device: torch.device, rows: int = 1,
                 kv_heads: int = 1) -> None:
        self.kind = kind
        self.kv_heads = kv_heads
        self.max_len = max_len
        self.positions = torch.arange(max_len, device=device)
        self.block_ids = torch.arange(max_len // FLEX_BLOCK, device=device, dtype=torch.int32)
        # Every row's list of blocks, written out: an expand() of block_ids (stride 0 across rows) reached the
        # compiled FlexAttention kernel as is, and with more than one row it read out of bounds on an H200
        # (an illegal memory access in the warm-up of the 4-row step, bench/results/gpu_tests_cuda.log).
        self.row_blocks = self.block_ids.repeat(rows, 1).view(rows, 1, 1, -1).contiguous()
        # split: each head's count of finished splits (split_decode_attention.py); every step leaves it at zero
        self.split_counts = torch.zeros(rows * kv_heads, dtype=torch.int32, device=device)

    def static_tensors(self) -> tuple[torch.Tensor, ...]:
        return self.positions, self.block_ids, self.row_blocks, self.split_counts

    def for_step(self, pos: torch.Tensor, bucket: int) -> object:
        """pos: [rows] positions of the new tokens (their K/V already written)."""
        if self.kind is DecodeAttention.SPLIT:
            return pos, self.split_counts
        if self.kind is DecodeAttention.SDPA:
            return (self.positions[:bucket][None, :] <= pos[:, None])[:, None, None]  # [rows, 1, 1, bucket]
        from torch.nn.attention.flex_attention import BlockMask

        rows = pos.shape[0]
        blocks = self.block_ids.shape[0]
        current = (pos // FLEX_BLOCK).to(torch.int32)  # the block holding the new token: the only one masked

        def filled(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            return kv_idx <= pos[b]

        every = self.row_blocks[:rows]
        return BlockMask.from_kv_blocks(
            torch.ones(rows, 1, 1, dtype=torch.int32, device=pos.device),
            ((self.block_ids[None, :] + current[:, None]) % blocks).view(rows, 1, 1, blocks),  # `current` first
            current.view(rows, 1, 1), every,  # the blocks before it are full: no mask evaluated there
            BLOCK_SIZE=FLEX_BLOCK, mask_mod=filled, seq_lengths=(1, self.max_len), compute_q_blocks=False,
        )


def attend(kind: DecodeAttention, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, shared: object,
           bucket: int, flex_options: dict[str, int | bool] | None = None) -> torch.Tensor:
    """q: [rows, heads, 1, dim] (roped); caches [rows, kv_heads, max_len, dim] -> [rows, 1, heads * dim].
    `flex_options`: FlexAttention's kernel options (its split of the cache, block sizes), when measured better."""
    rows, heads, _, dim = q.shape
    kv_heads = k_cache.shape[1]
    if kind is DecodeAttention.SDPA:
        group = q.view(rows, kv_heads, heads // kv_heads, dim)
        assert isinstance(shared, torch.Tensor)
        out = F.scaled_dot_product_attention(group, k_cache[:, :, :bucket], v_cache[:, :, :bucket], attn_mask=shared)
    elif kind is DecodeAttention.SPLIT:
        from core.models.split_decode_attention import split_attend

        assert isinstance(shared, tuple)
        pos, counts = shared
        return split_attend(q, k_cache, v_cache, pos, counts)
    else:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention

        assert isinstance(shared, BlockMask)
        out = flex_attention(q, k_cache, v_cache, block_mask=shared, enable_gqa=kv_heads != heads,
                             kernel_options=cast(Any, flex_options) or None)  # a TypedDict of its own
    return out.reshape(rows, 1, heads * dim)
