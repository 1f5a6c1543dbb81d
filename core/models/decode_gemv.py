"""The matrix-vector products of the compiled one-row decode step: cuBLAS, a reduction Inductor writes, or
Loupe's own Triton GEMV (row_gemv.py), chosen per projection by measurement.

With one row a projection reads its whole weight to make one output vector: it is a copy of the weight
through the SMs, and how near it runs to the copy floor depends on how the kernel spreads the rows of the
weight over the GPU. On the H200 (7B shape, bf16; bench/results/decode_rows_cuda.json's profile) cuBLAS ran
gate/up at 97% of copy bandwidth, down at 93% (plus a split-K reduce kernel), the LM head at the floor, and
QKV and O at about 74%.
- REDUCTION: written as a multiply and a sum, a projection becomes an Inductor reduction over the weight's
  rows. Measured on the H200 (bench/results/decode_compile_variants_gemv_cuda.json), it lost everywhere:
  every projection from cuBLAS 208.8 tok/s; the LM head as a reduction 205.4; QKV, O and the LM head 184.0;
  every projection 155.4 (198.9 with Inductor's coordinate-descent tuning). It stays for the variants bench.
- TRITON: row_gemv.py, Loupe's own kernel, two weight rows per program: faster than cuBLAS on every shape of
  the sweep (bench/results/gemv_sweep_cuda.json: QKV 85.7% of copy bandwidth against 78.1%, O 75.1 / 62.9,
  down 93.3 / 88.7, gate/up 100.6 / 97.3, LM head 104.7 / 95.0). In the step, with the split-KV kernel
  (bench/results/decode_compile_variants_own_gemv_cuda.json, one run): every projection cuBLAS 213.9 tok/s;
  QKV and O ours 218.7; QKV, O and the MLP ours 231.3 (80.2% of the limit); QKV alone 214.5, O alone 216.1.
PRODUCT_GEMV is the product's choice where Loupe's Triton kernels run (decode_attention.py's "split"): every
projection through row_gemv.py (the LM head by the sweep: 170.2 us against cuBLAS's 187.5).
With several rows, one GEMM reads the weight once for all of them (a GEMV per row would read it per row):
TRITON there is rows_gemv.py, the same walk feeding MMAs, chosen separately (PRODUCT_ROWS_GEMV: cuBLAS, which
was faster on the H200, bench/results/decode_rows_gemv_cuda.json).
"""
from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F


class Projection(StrEnum):
    QKV = "qkv"
    OUT = "out"  # attention's output projection
    MLP = "mlp"  # gate/up and down
    LM_HEAD = "lm_head"


class GemvKernel(StrEnum):
    CUBLAS = "cublas"  # F.linear
    REDUCTION = "reduction"  # a multiply and a sum, for Inductor to fuse
    TRITON = "triton"  # row_gemv.py


# The product's choice for the compiled one-row step where the split-KV kernel runs (the module docstring).
PRODUCT_GEMV: dict[Projection, GemvKernel] = dict.fromkeys(Projection, GemvKernel.TRITON)
# And for the rows' step: cuBLAS, measured faster than rows_gemv.py on the H200 (4.92 ms vs 6.50 at 8 rows).
PRODUCT_ROWS_GEMV: dict[Projection, GemvKernel] = {}
# Whether the one-row step folds the norms, residual adds and SiLU·mul into its GEMVs (fused_gemv.py): off,
# measured slower on the H200 (210.7 tok/s against 231.8, bench/results/decode_compile_variants_fused_cuda.json).
PRODUCT_FUSED = False


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            kernel: GemvKernel = GemvKernel.CUBLAS) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) -> [..., N]. As a reduction or Loupe's GEMV: the products in
    float32, summed in float32, rounded once at the end, as cuBLAS accumulates a bf16 GEMV; compiled, the
    float32 products are never stored (they are made and summed inside the kernel)."""
    if kernel is GemvKernel.CUBLAS:
        return F.linear(x, weight, bias)
    if kernel is GemvKernel.TRITON:  # imports Triton: only where the kernels run
        if x.numel() == x.shape[-1]:
            from core.models.row_gemv import gemv

            return gemv(x, weight, bias)
        from core.models.rows_gemv import rows_gemv

        return rows_gemv(x, weight, bias)
    out = (x.unsqueeze(-2).float() * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)
