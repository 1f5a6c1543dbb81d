"""Loupe's one-row GEMV with the norm, the residual add and SiLU·mul folded in (core/models/fused_gemv.py), run
by Triton's interpreter on the CPU: each fold gives the unfused computation's result, and the fast path with
them answers as generate() does (float32)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from core.models.decode_attention import DecodeAttention  # noqa: E402
from core.models.decode_gemv import PRODUCT_FUSED, GemvKernel, Projection  # noqa: E402
from core.models.fast_decode import FastDecoder  # noqa: E402
from core.models.fused_gemv import fused_gemv  # noqa: E402

EPS = 1e-6


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


@pytest.mark.parametrize(("n", "k"), [(96, 64), (100, 200), (6, 1030)])  # masked edges, K over one block
@pytest.mark.parametrize("with_bias", [False, True])
def test_the_norm_in_the_prologue_is_the_norm_then_the_projection(n, k, with_bias) -> None:
    generator = torch.Generator().manual_seed(n + k)
    x, norm = torch.randn(1, 1, k, generator=generator) * 3, torch.rand(k, generator=generator) + 0.5
    weight = torch.randn(n, k, generator=generator)
    bias = torch.randn(n, generator=generator) if with_bias else None
    got = fused_gemv(x, weight, bias, norm_weight=norm, eps=EPS)
    want = F.linear(_rmsnorm(x, norm), weight, bias)
    assert got.shape == (1, 1, n) and (got - want).abs().max() < 1e-4


def test_the_residual_in_the_epilogue_is_added_before_the_one_rounding() -> None:
    generator = torch.Generator().manual_seed(2)
    x, residual = torch.randn(1, 1, 256, generator=generator), torch.randn(1, 1, 48, generator=generator)
    weight, bias = torch.randn(48, 256, generator=generator), torch.randn(48, generator=generator)
    got = fused_gemv(x, weight, bias, residual=residual)
    assert (got - (residual + F.linear(x, weight, bias))).abs().max() < 1e-4
    # bf16: the float32 sum plus the residual, rounded once
    xb, rb, wb = x.bfloat16(), residual.bfloat16(), (weight * 0.05).bfloat16()
    exact = rb.float() + F.linear(xb.float(), wb.float())
    got_b = fused_gemv(xb, wb, None, residual=rb)
    assert got_b.dtype == torch.bfloat16
    assert (got_b.float() - exact).abs().max() <= torch.finfo(torch.bfloat16).eps * exact.abs().max()


def test_swiglu_takes_gate_and_up_from_the_two_halves_of_the_fused_matrix() -> None:
    generator = torch.Generator().manual_seed(3)
    x, norm = torch.randn(1, 1, 128, generator=generator), torch.rand(128, generator=generator) + 0.5
    gate_up = torch.randn(2 * 40, 128, generator=generator)  # gate rows 0..39, up rows 40..79
    got = fused_gemv(x, gate_up, None, norm_weight=norm, eps=EPS, swiglu=True)
    gate, up = F.linear(_rmsnorm(x, norm), gate_up).chunk(2, dim=-1)
    assert got.shape == (1, 1, 40) and (got - F.silu(gate) * up).abs().max() < 1e-4


def test_fast_path_with_the_folds_answers_as_generate(float32_demo_answer) -> None:
    """The one-row step with every fold (Loupe's GEMVs elsewhere, the split-KV kernel beside them): the demo
    model's first 24 greedy ids equal generate()'s (float32). Off unless asked for: not measured on a GPU yet."""
    model, inputs, want = float32_demo_answer
    every = dict.fromkeys(Projection, GemvKernel.TRITON)
    fast = FastDecoder(model, 512, compile=False, attention=DecodeAttention.SPLIT, gemv=every, fused=True)
    try:
        assert torch.equal(fast.generate(inputs, 24, 1.005, set()), want)
    finally:
        fast.close()
    assert not PRODUCT_FUSED and not FastDecoder(model, 64, compile=False).fused
