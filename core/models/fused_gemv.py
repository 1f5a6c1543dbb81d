"""Loupe's one-row GEMV with the small kernels around it folded in (prologue and epilogue), for the 85% goal.

Why: after Loupe's GEMVs (row_gemv.py) the one-row step on the H200 spends 4.23 ms a token in kernels, of
which 0.31 ms are small kernels between the GEMVs (bench/results/decode_speed_cuda.json's profile): per layer
two residual-add + RMSNorm kernels and one SiLU·mul, each a launch and a round trip of the hidden state
through memory. Each folds into a GEMV that already walks the data:
- the RMSNorm (prologue): its scaling is linear, so the GEMV multiplies x by the norm's weight as it loads it,
  sums x² on the way (every program walks all of K anyway) and scales its sums by rsqrt(mean + eps) at the
  end: QKV, gate/up and the LM head's input need no norm kernel;
- the residual add (epilogue): O and down add the residual stream to their sums before the one rounding;
- SiLU·mul (epilogue of gate/up): a program owns gate row n and up row n (rows n and n + I of the fused
  matrix) and writes silu(gate)·up, so the MLP's activation is one value per row, never gate and up.
Arithmetic: everything in float32, rounded once per output (the unfused path rounds the normed input, the
projections and the sum each to the model's dtype): in bf16 as close to an fp32 truth or closer; in float32
the same sums in another order (the CPU tests check generate()'s ids).
Off (decode_gemv.PRODUCT_FUSED): measured slower on the H200 (bench/results/decode_compile_variants_fused_cuda.json,
one run: 210.7 tok/s against 231.8 with the plain GEMVs and Inductor's small kernels). It stays for the variants
bench and its tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from core.models.row_gemv import config_for


@triton.jit
def _fused_row_gemv(x_ptr, w_ptr, b_ptr, g_ptr, r_ptr, out_ptr, N, K, stride_wn, half, eps,
                    HAS_BIAS: tl.constexpr, NORM: tl.constexpr, RESIDUAL: tl.constexpr, SWIGLU: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    pair = tl.arange(0, 2)
    if SWIGLU:  # gate row pid and up row pid
        n = pid + pair * half
    else:
        n = pid * 2 + pair
    in_n = n < N
    acc = tl.zeros([2, BLOCK_K], dtype=tl.float32)
    squares = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        in_k = k < K
        x = tl.load(x_ptr + k, mask=in_k, other=0.0).to(tl.float32)
        if NORM:
            squares += x * x
            x = x * tl.load(g_ptr + k, mask=in_k, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + n[:, None] * stride_wn + k[None, :], mask=in_n[:, None] & in_k[None, :], other=0.0,
                    eviction_policy="evict_first")
        acc += w.to(tl.float32) * x[None, :]
    out = tl.sum(acc, axis=1)
    if NORM:
        out = out * tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
    if HAS_BIAS:
        out += tl.load(b_ptr + n, mask=in_n, other=0.0).to(tl.float32)
    if SWIGLU:
        gate = tl.sum(tl.where(pair == 0, out, 0.0), axis=0)
        up = tl.sum(tl.where(pair == 1, out, 0.0), axis=0)
        tl.store(out_ptr + pid, (gate * tl.sigmoid(gate) * up).to(out_ptr.dtype.element_ty))
    else:
        if RESIDUAL:
            out += tl.load(r_ptr + n, mask=in_n, other=0.0).to(tl.float32)
        tl.store(out_ptr + n, out.to(out_ptr.dtype.element_ty), mask=in_n)


@triton_op("loupe::fused_row_gemv", mutates_args={})
def fused_row_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, norm_weight: torch.Tensor | None,
                   residual: torch.Tensor | None, eps: float, swiglu: bool, block_k: int, warps: int) -> torch.Tensor:
    """x [K] -> [N] (or [N / 2] with swiglu) in weight's dtype; the module docstring says what each part adds."""
    n, k = weight.shape
    width = n // 2 if swiglu else n
    out = weight.new_empty((width,))
    wrap_triton(_fused_row_gemv)[(width if swiglu else triton.cdiv(n, 2),)](
        x, weight, bias if bias is not None else out, norm_weight if norm_weight is not None else x,
        residual if residual is not None else out, out, n, k, weight.stride(0), width, eps,
        HAS_BIAS=bias is not None, NORM=norm_weight is not None, RESIDUAL=residual is not None, SWIGLU=swiglu,
        BLOCK_K=block_k, num_warps=warps, num_stages=1)
    return out


def fused_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
               norm_weight: torch.Tensor | None = None, eps: float = 1e-6, residual: torch.Tensor | None = None,
               swiglu: bool = False) -> torch.Tensor:
    """x [..., K] holding one row -> [..., N]: weight @ rmsnorm(x) (with `norm_weight`) + bias, then + residual,
    or silu(gate) * up over the two halves of weight's rows (`swiglu`: [..., N / 2])."""
    n, k = weight.shape
    config = config_for(n, k)
    flat = residual.reshape(-1).contiguous() if residual is not None else None
    out = fused_row_gemv(x.reshape(k).contiguous(), weight, bias, norm_weight, flat, eps, swiglu, config.block_k,
                         config.warps)
    return out.view(*x.shape[:-1], out.shape[0])
