"""A second GEMV for the rows' decode step (2 to 8 rows): the one-row kernel's walk (row_gemv.py) with every row's
x multiplied on the CUDA cores, no MMA: out = x @ weight.T.

Why: the rows' step is what Compare (4 templates on one image) decodes with, and it costs more than the one-row
step: cuBLAS runs the rows' projections at 64-77% of copy bandwidth on QKV and O (bench/results/
gemv_sweep_rows8_cuda.json), and the MMA kernel (rows_gemv.py) did worse, its weight tile going through shared
memory to meet the MMA's layout. Here a program owns BLOCK_N weight rows, loads BLOCK_K columns of them a step
as the one-row kernel does, and multiplies them with each of the BLOCK_M rows of x in registers
([BLOCK_M, BLOCK_N, BLOCK_K] float32 products, summed once at the end). A weight element costs BLOCK_M
multiply-adds: at 4 rows about a quarter of the H200's float32 rate at the copy bandwidth, so the loads, not
the arithmetic, should set the pace; x (a few tens of KB) is read by every program from L2.
Arithmetic: products and sums in float32, rounded once, as cuBLAS accumulates a bf16 GEMM; float32 weights give
IEEE products, so float32 answers match generate().
Measured by bench/gemv_sweep.py --rows N --kernel fma; the product uses it only where decode_gemv says so.
On a CPU it runs under Triton's interpreter only (the tests: TRITON_INTERPRET=1).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from core.models.row_gemv import GemvConfig

MAX_ROWS = 8  # BLOCK_M products per weight element: beyond 8 the arithmetic, not the loads, would set the pace
DEFAULT = GemvConfig(block_n=2, block_k=512, warps=4, stages=1)


@triton.jit
def _rows_fma(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
              HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    in_n = n < N
    in_m = m < M
    acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        in_k = k < K
        x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :], mask=in_m[:, None] & in_k[None, :], other=0.0)
        w = tl.load(w_ptr + n[:, None] * stride_wn + k[None, :], mask=in_n[:, None] & in_k[None, :], other=0.0,
                    eviction_policy="evict_first")
        acc += x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]
    out = tl.sum(acc, axis=2)  # [BLOCK_M, BLOCK_N]
    if HAS_BIAS:
        out += tl.load(b_ptr + n, mask=in_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None] * stride_om + n[None, :], out.to(out_ptr.dtype.element_ty),
             mask=in_m[:, None] & in_n[None, :])


@triton_op("loupe::rows_fma_gemv", mutates_args={})
def rows_fma_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, block_n: int, block_k: int,
                warps: int, stages: int) -> torch.Tensor:
    """x [M, K] (rows contiguous, M <= MAX_ROWS), weight [N, K] (rows contiguous), bias [N] or None
    -> [M, N] in weight's dtype."""
    rows, k = x.shape
    n = weight.shape[0]
    out = weight.new_empty((rows, n))
    wrap_triton(_rows_fma)[(triton.cdiv(n, block_n),)](
        x, weight, bias if bias is not None else out, out, rows, n, k, x.stride(0), weight.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=triton.next_power_of_2(rows), BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, num_stages=stages)
    return out


def rows_fma_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: GemvConfig | None = None) -> torch.Tensor:
    """x [..., K] of at most MAX_ROWS rows -> [..., N], as F.linear(x, weight, bias). More rows, or a weight whose
    rows are not contiguous, go to F.linear."""
    n, k = weight.shape
    rows = x.numel() // k
    if rows > MAX_ROWS or weight.stride(1) != 1:
        return torch.nn.functional.linear(x, weight, bias)
    c = config or DEFAULT
    out = rows_fma_op(x.reshape(rows, k).contiguous(), weight, bias, c.block_n, c.block_k, c.warps, c.stages)
    return out.view(*x.shape[:-1], n)
