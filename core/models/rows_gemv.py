"""Loupe's GEMV for the rows' decode step (2 to 16 rows, one per answer decoding at once): out = x @ weight.T.

Why: a step of several rows reads each weight once for all of them, so it costs about one row's step; but
cuBLAS runs the rows' projections with the same tiles as one row's (bench/results/decode_rows_cuda.json: the
8-row step 4.98 ms on the H200 against 4.71 for one row, both cuBLAS), while Loupe's one-row kernel
(row_gemv.py) took one row's step to 4.34 ms. Here the same walk over the weight feeds tensor-core MMAs:
each program owns BLOCK_N weight rows and multiplies the rows' x (padded to 16, the smallest MMA) with them,
BLOCK_K columns a step, accumulating in float32.
Arithmetic: bf16 and fp16 values are converted to float32 first and multiplied in TF32, which holds them
exactly, so the products are exact and the sums float32 (rounded once, as cuBLAS does); float32 weights are
multiplied in IEEE float32 (no TF32), so float32 answers match generate(). (Triton's interpreter computes
bf16 MMAs wrongly: converting first keeps the CPU tests on the same code.)
Measured on the H200 and left off (decode_gemv.PRODUCT_ROWS_GEMV is empty): at 8 rows the best of 99 block
shapes is slower than cuBLAS on every 7B projection but the LM head (bench/results/gemv_sweep_rows8_cuda.json:
QKV 66.5% of copy bandwidth vs 77.5, down 75.4 vs 90.2), and the 8-row step takes 6.50 ms against cuBLAS's 4.92
(decode_rows_gemv_cuda.json). Kept, tested, for models and cards where bench/decode_rows.py --rows-gemv triton
says otherwise. On a CPU the kernel runs under Triton's interpreter only (the tests: TRITON_INTERPRET=1).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from core.models.row_gemv import GemvConfig

MAX_ROWS = 16
DEFAULT = GemvConfig(block_n=16, block_k=256, warps=4, stages=3)  # near the sweep's best for O and down (8 rows)


@triton.jit
def _rows_gemv(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
               HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               PRECISION: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    in_n = n < N
    in_m = m < M
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        in_k = k < K
        x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :], mask=in_m[:, None] & in_k[None, :], other=0.0)
        w = tl.load(w_ptr + n[None, :] * stride_wn + k[:, None], mask=in_n[None, :] & in_k[:, None], other=0.0,
                    eviction_policy="evict_first")  # [BLOCK_K, BLOCK_N]: the weight's rows as columns
        acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=in_n, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + m[:, None] * stride_om + n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=in_m[:, None] & in_n[None, :])


@triton_op("loupe::rows_gemv", mutates_args={})
def rows_gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, block_n: int, block_k: int,
                 warps: int, stages: int) -> torch.Tensor:
    """x [M, K] (rows contiguous, M <= MAX_ROWS), weight [N, K] (rows contiguous), bias [N] or None
    -> [M, N] in weight's dtype."""
    rows, k = x.shape
    n = weight.shape[0]
    out = weight.new_empty((rows, n))
    wrap_triton(_rows_gemv)[(triton.cdiv(n, block_n),)](
        x, weight, bias if bias is not None else out, out, rows, n, k, x.stride(0), weight.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=max(16, triton.next_power_of_2(rows)), BLOCK_N=block_n, BLOCK_K=block_k,
        PRECISION="ieee" if weight.dtype == torch.float32 else "tf32", num_warps=warps, num_stages=stages)
    return out


def rows_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
              config: GemvConfig | None = None) -> torch.Tensor:
    """x [..., K] of at most MAX_ROWS rows -> [..., N], as F.linear(x, weight, bias). More rows, or a weight whose
    rows are not contiguous, go to F.linear."""
    n, k = weight.shape
    rows = x.numel() // k
    if rows > MAX_ROWS or weight.stride(1) != 1:
        return torch.nn.functional.linear(x, weight, bias)
    c = config or DEFAULT
    out = rows_gemv_op(x.reshape(rows, k).contiguous(), weight, bias, c.block_n, c.block_k, c.warps, c.stages)
    return out.view(*x.shape[:-1], n)
