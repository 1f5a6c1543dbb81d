"""Loupe's GEMV kernels, one row (core/models/row_gemv.py) and several (core/models/rows_gemv.py), run by
Triton's interpreter on the CPU (tests/conftest.py turns it on): F.linear's result for the block shapes they
are swept over, with and without a bias, and the fast path with them answers as generate() does."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from core.models.decode_attention import DecodeAttention  # noqa: E402
from core.models.decode_gemv import PRODUCT_GEMV, PRODUCT_ROWS_GEMV, GemvKernel, Projection  # noqa: E402
from core.models.fast_decode import FastDecoder  # noqa: E402
from core.models.row_gemv import GemvConfig, config_for, gemv  # noqa: E402
from core.models.rows_gemv import MAX_ROWS, rows_gemv  # noqa: E402


@pytest.mark.parametrize(("n", "k", "config"), [
    (96, 64, GemvConfig(8, 32, 1, 1)),
    (100, 200, GemvConfig(16, 64, 2, 2)),  # neither N nor K a multiple of the blocks: masked edges
    (7, 300, GemvConfig(2, 256, 2, 1)),
    (40, 48, config_for(40, 48)),  # one block longer than K
])
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_is_f_linear_in_float32(n, k, config, with_bias) -> None:
    generator = torch.Generator().manual_seed(n * k)
    x = torch.randn(1, 1, k, generator=generator)
    weight = torch.randn(n, k, generator=generator)
    bias = torch.randn(n, generator=generator) if with_bias else None
    got = gemv(x, weight, bias, config)
    assert got.shape == (1, 1, n) and got.dtype == torch.float32
    assert (got - F.linear(x, weight, bias)).abs().max() < 1e-4


def test_weight_rows_may_be_a_view_into_a_fused_matrix() -> None:
    """The fast path's QKV is a slice of one fused matrix: rows contiguous, a row stride of the full width."""
    generator = torch.Generator().manual_seed(3)
    fused = torch.randn(48, 64, generator=generator)
    x = torch.randn(1, 64, generator=generator)
    part = fused[16:40]
    assert (gemv(x, part) - F.linear(x, part)).abs().max() < 1e-4


def test_a_weight_with_strided_columns_is_still_f_linear() -> None:
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(64, 32, generator=generator).t()  # [32, 64], columns 32 apart
    x = torch.randn(1, 64, generator=generator)
    assert (gemv(x, weight) - F.linear(x, weight)).abs().max() < 1e-4


def test_bf16_is_rounded_once_from_float32_sums() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, 512, generator=generator).bfloat16()
    weight = (torch.randn(64, 512, generator=generator) * 0.05).bfloat16()
    got = gemv(x, weight)
    assert got.dtype == torch.bfloat16
    exact = F.linear(x.float(), weight.float())  # the same bf16 inputs, products and sums in float32
    assert (got.float() - exact).abs().max() <= torch.finfo(torch.bfloat16).eps * exact.abs().max()


@pytest.mark.parametrize(("rows", "n", "k", "config"), [
    (2, 96, 64, GemvConfig(16, 32, 1, 1)),
    (3, 100, 200, GemvConfig(32, 64, 2, 2)),  # masked rows, weight rows and columns
    (8, 48, 300, None),
    (16, 16, 16, None),
])
@pytest.mark.parametrize("with_bias", [False, True])
def test_rows_kernel_is_f_linear_in_float32(rows, n, k, config, with_bias) -> None:
    generator = torch.Generator().manual_seed(rows * n + k)
    x = torch.randn(rows, 1, k, generator=generator)  # as the rows' step holds it: [rows, 1, hidden]
    weight = torch.randn(n, k, generator=generator)
    bias = torch.randn(n, generator=generator) if with_bias else None
    got = rows_gemv(x, weight, bias, config)
    assert got.shape == (rows, 1, n)
    assert (got - F.linear(x, weight, bias)).abs().max() < 1e-4


def test_rows_kernel_rounds_bf16_once_and_leaves_more_rows_to_f_linear() -> None:
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(4, 512, generator=generator).bfloat16()
    weight = (torch.randn(64, 512, generator=generator) * 0.05).bfloat16()
    got = rows_gemv(x, weight)
    exact = F.linear(x.float(), weight.float())  # TF32 holds bf16 exactly: products exact, sums float32
    assert got.dtype == torch.bfloat16
    assert (got.float() - exact).abs().max() <= torch.finfo(torch.bfloat16).eps * exact.abs().max()
    many = torch.randn(MAX_ROWS + 1, 512, generator=generator).bfloat16()
    assert torch.equal(rows_gemv(many, weight), F.linear(many, weight))


def test_blocks_follow_the_measured_rule() -> None:
    """Two rows a program; 1024 columns a step where K is a multiple of 1024 (no masked tail), else 512."""
    assert config_for(6144, 4096) == GemvConfig(2, 1024, 4, 1)
    assert config_for(4608, 3584) == GemvConfig(2, 512, 2, 1)


def test_fast_path_with_the_kernel_answers_as_generate(float32_demo_answer) -> None:
    """Every projection of the one-row step through the kernel: the demo model's first 24 greedy ids equal
    generate()'s (float32), with the split-KV kernel beside it, as on a GPU."""
    model, inputs, want = float32_demo_answer
    every = dict.fromkeys(Projection, GemvKernel.TRITON)
    fast = FastDecoder(model, 512, compile=False, attention=DecodeAttention.SPLIT, gemv=every)
    try:
        assert torch.equal(fast.generate(inputs, 24, 1.005, set()), want)
    finally:
        fast.close()


def test_the_measured_choice_applies_only_beside_the_split_kernel_on_a_gpu(demo_model_dir) -> None:
    """Not compiled on a GPU, or with FlexAttention (the fallback when Loupe's kernels cannot build): cuBLAS."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    for attention in (DecodeAttention.SPLIT, DecodeAttention.FLEX, DecodeAttention.AUTO):
        fast = FastDecoder(model, 64, compile=False, attention=attention)
        assert fast.gemv == {} and fast.rows_gemv == {}
        fast.close()
    assert PRODUCT_GEMV == dict.fromkeys(Projection, GemvKernel.TRITON)
    assert PRODUCT_ROWS_GEMV == {}  # the rows' kernel measured slower than cuBLAS on the H200
