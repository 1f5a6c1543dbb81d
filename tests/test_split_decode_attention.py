"""Loupe's split-KV decode attention kernel (core/models/split_decode_attention.py), run by Triton's interpreter
on the CPU (tests/conftest.py turns it on): the same attention as SDPA over each row's filled positions, and
the fast path with it answers as generate() does."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from core.models.decode_attention import DecodeAttention  # noqa: E402
from core.models.fast_decode import FastDecoder  # noqa: E402
from core.models.split_decode_attention import split_attend as attend_with_counts  # noqa: E402
from core.models.split_decode_attention import splits_for  # noqa: E402


def split_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The kernel with fresh finish counts, which it must leave at zero."""
    counts = torch.zeros(q.shape[0] * k.shape[1], dtype=torch.int32)
    out = attend_with_counts(q, k, v, pos, counts)
    assert not counts.any()
    return out


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Each row's query against its positions 0..pos[row], in float32 (transformers' repeat_kv head order)."""
    rows, heads, _, dim = q.shape
    group = heads // k.shape[1]
    out = []
    for row in range(rows):
        n = int(pos[row]) + 1
        keys = k[row : row + 1, :, :n].float().repeat_interleave(group, dim=1)
        values = v[row : row + 1, :, :n].float().repeat_interleave(group, dim=1)
        attended = F.scaled_dot_product_attention(q[row : row + 1].float(), keys, values)
        out.append(attended.transpose(1, 2).reshape(1, 1, heads * dim))
    return torch.cat(out)


@pytest.mark.parametrize(("rows", "heads", "kv_heads", "dim", "length"),
                         [(1, 32, 8, 128, 300), (3, 4, 2, 16, 128), (2, 8, 8, 32, 64), (4, 6, 2, 16, 96)])
def test_kernel_is_sdpa_over_each_rows_filled_positions(rows, heads, kv_heads, dim, length) -> None:
    generator = torch.Generator().manual_seed(rows * 100 + heads)
    q = torch.randn(rows, heads, 1, dim, generator=generator)
    k, v = (torch.randn(rows, kv_heads, length, dim, generator=generator) for _ in range(2))
    # Rows at different lengths: a single position, the whole cache, and lengths between.
    pos = torch.tensor([length - 1, 0, length // 2, 37][:rows])
    want = reference(q, k, v, pos)
    assert (split_attend(q, k, v, pos) - want).abs().max() < 1e-5
    # Positions past a row's length hold anything: they are never read.
    k[:, :, length // 2 + 1 :] = float("nan")
    v[:, :, length // 2 + 1 :] = float("nan")
    short = torch.clamp(pos, max=length // 2)
    assert torch.isfinite(split_attend(q, k, v, short)).all()
    assert (split_attend(q, k, v, short) - reference(q, k, v, short)).abs().max() < 1e-5


def test_bf16_caches_are_as_close_to_float32_as_the_output_rounding() -> None:
    generator = torch.Generator().manual_seed(7)
    q = torch.randn(2, 32, 1, 128, generator=generator)
    k, v = (torch.randn(2, 8, 256, 128, generator=generator) for _ in range(2))
    pos = torch.tensor([255, 100])
    got = split_attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), pos)
    assert got.dtype == torch.bfloat16
    want = reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), pos)  # the same bf16 inputs, in float32
    assert (got.float() - want).abs().max() <= 2 * torch.finfo(torch.bfloat16).eps * want.abs().max()


def test_splits_give_about_two_programs_per_multiprocessor() -> None:
    cpu = torch.device("cpu")  # counted as 16 multiprocessors
    assert splits_for(1, 8, cpu) == 4 and splits_for(1, 2, cpu) == 16 and splits_for(8, 8, cpu) == 1
    assert splits_for(1, 1, cpu) == 16  # at most 16: the combining program holds them all


def test_fast_path_with_split_attention_answers_as_generate(float32_demo_answer) -> None:
    """The demo model's first 24 greedy ids through the fast path with the kernel equal generate()'s (float32)."""
    model, inputs, want = float32_demo_answer
    fast = FastDecoder(model, 512, compile=False, attention=DecodeAttention.SPLIT)
    assert fast.attention is DecodeAttention.SPLIT and fast.buckets == (512,)
    try:
        assert torch.equal(fast.generate(inputs, 24, 1.005, set()), want)
    finally:
        fast.close()


def test_split_falls_back_to_sdpa_where_triton_cannot_run(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert DecodeAttention.SPLIT.resolved(compiled_on_cuda=False) is DecodeAttention.SDPA
    assert DecodeAttention.SPLIT.resolved(compiled_on_cuda=True) is DecodeAttention.SPLIT
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert DecodeAttention.SPLIT.resolved(compiled_on_cuda=False) is DecodeAttention.SPLIT
