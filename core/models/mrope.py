"""Multimodal RoPE (Qwen2-VL's and Qwen2.5-VL's M-RoPE) on the fast path (fast_decode.py).

The model's own forward gives every prompt token three positions (time, height, width: an image's tokens
share rows and columns, so a prompt's positions end below its length). Its language model's rotary embedding
turns them into one cos/sin per token, which the prefill applies instead of the table's rows. Every generated
token is text, whose three positions are equal, so its rotation is the plain table's row at (cache position +
the prompt's delta), delta = the prompt's largest position + 1 - its length: what transformers keeps as
`rope_deltas`. The decode step adds each row's delta (a static [rows] tensor, written at that row's prefill)
to the positions it reads the table at. The table is twice the cache long: a video's delta can be positive
(its time positions follow seconds, not frames) and must still land inside it.
Prompts are prefilled one by one and share no prefix: two prompts with the same tokens can have different
positions (an image's grid), so neither the packed prefill nor the prefix copy applies as built.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch


class PromptRope(NamedTuple):
    """One prompt's rotation: cos and sin [1, T, head_dim], and the delta its generated tokens take."""

    cos: torch.Tensor
    sin: torch.Tensor
    delta: int


def prompt_rope(lm: Any, position_ids: torch.Tensor | None, length: int, max_len: int,
                dtype: torch.dtype, device: torch.device) -> PromptRope | None:
    """The rotation of a prompt of `length` tokens whose model handed its language model `position_ids`
    ([3, 1, T], or [4, 1, T] with the text positions first); None where it handed none (plain positions,
    delta 0: the table's rows)."""
    if position_ids is None:
        return None
    three = position_ids[-3:] if position_ids.dim() == 3 else position_ids[None].expand(3, -1, -1)
    delta = int(three.max()) + 1 - length
    if not -length <= delta < max_len:
        raise ValueError(f"the prompt's positions (delta {delta}) do not fit the {max_len}-token cache's table")
    probe = torch.zeros(1, 1, device=three.device, dtype=dtype)
    cos, sin = lm.rotary_emb(probe, three)
    return PromptRope(cos.to(device, dtype), sin.to(device, dtype), delta)
