"""Loupe's own GEMV for the compiled one-row decode step: out = weight @ x (+ bias), one Triton kernel.

Why: with one row, a projection is a copy of its weight through the SMs, and cuBLAS's kernels for the
attention's projections ran below the copy floor on the H200: QKV (6144 x 4096) at about 74% of copy
bandwidth, O (4096 x 4096) at about 73% plus a split-K reduce kernel (bench/results/decode_rows_cuda.json's
profile), while gate/up and down ran at 93-97%.
How: each program owns BLOCK_N rows of the weight and walks the whole K, multiplying in float32 and summing
once at the end: no split-K, no second kernel, and with small programs many are resident on each SM at
once, which is what keeps enough loads in flight to stream at the copy rate. The weight is read once, marked
evict-first so that the small things every program reads again (x, the bias) stay in L2.
Arithmetic: products and sum in float32, rounded once into the weight's dtype, as cuBLAS accumulates a bf16
GEMV; float32 weights give IEEE float32 products (no TF32).
Its blocks are a measured choice (config_for), from bench/gemv_sweep.py on the H200 over 114 configs
(bench/results/gemv_sweep_cuda.json, as a share of copy bandwidth, cuBLAS -> this kernel):
  QKV 6144x4096 78.1% -> 85.7%; O 4096x4096 62.9% -> 75.1%; gate/up 28672x4096 97.3% -> 100.6%;
  down 4096x14336 88.7% -> 93.3%; LM head 92544x4096 95.0% -> 104.7% (a read alone streams faster than the
  copy, which reads and writes); Qwen2.5-7B's QKV 4608x3584 71.0% -> 79.5%, O 3584x3584 56.3% -> 73.6%.
Two weight rows per program won everywhere (within 0.4% of the best on down), with 1024 columns a step and
4 warps where K is a multiple of 1024, else 512 and 2 warps (no masked tail); num_stages made no difference
(the loop's loads feed no MMA, so Triton does not pipeline them). CONFIGS overrides the rule per shape (the
variants bench sets it from a sweep).
The kernel compiles into the step through torch.library.triton_op; on a CPU it runs under Triton's
interpreter only (the tests: TRITON_INTERPRET=1), never in the product (decode_gemv.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton


@dataclass(frozen=True)
class GemvConfig:
    block_n: int  # weight rows per program
    block_k: int  # columns per loop step
    warps: int
    stages: int


CONFIGS: dict[tuple[int, int], GemvConfig] = {}  # (N, K) -> blocks, overriding the rule (the module docstring)


def config_for(n: int, k: int) -> GemvConfig:
    if (n, k) in CONFIGS:
        return CONFIGS[(n, k)]
    wide = k % 1024 == 0
    return GemvConfig(block_n=2, block_k=1024 if wide else 512, warps=4 if wide else 2, stages=1)


@triton.jit
def _row_gemv(x_ptr, w_ptr, b_ptr, out_ptr, N, K, stride_wn,
              HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_n = n < N
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        in_k = k < K
        x = tl.load(x_ptr + k, mask=in_k, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + n[:, None] * stride_wn + k[None, :], mask=in_n[:, None] & in_k[None, :], other=0.0,
                    eviction_policy="evict_first")
        acc += w.to(tl.float32) * x[None, :]
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(b_ptr + n, mask=in_n, other=0.0).to(tl.float32)
    tl.store(out_ptr + n, out.to(out_ptr.dtype.element_ty), mask=in_n)


@triton_op("loupe::row_gemv", mutates_args={})
def row_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, block_n: int, block_k: int,
             warps: int, stages: int) -> torch.Tensor:
    """x [K] (contiguous), weight [N, K] (rows contiguous), bias [N] or None -> [N] in weight's dtype."""
    n, k = weight.shape
    out = weight.new_empty((n,))
    wrap_triton(_row_gemv)[(triton.cdiv(n, block_n),)](
        x, weight, bias if bias is not None else out, out, n, k, weight.stride(0),
        HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages)
    return out


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
         config: GemvConfig | None = None) -> torch.Tensor:
    """x [..., K] holding one row (its leading dims multiply to 1) -> [..., N], as F.linear(x, weight, bias).
    A weight whose rows are not contiguous (a transposed view) goes to F.linear: the kernel walks rows."""
    n, k = weight.shape
    if weight.stride(1) != 1:
        return torch.nn.functional.linear(x, weight, bias)
    c = config or config_for(n, k)
    out = row_gemv(x.reshape(k).contiguous(), weight, bias, c.block_n, c.block_k, c.warps, c.stages)
    return out.view(*x.shape[:-1], n)
