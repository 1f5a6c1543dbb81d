"""The matrix-vector products of the compiled one-row decode step: cuBLAS GEMVs, or reductions Inductor writes.

With one row a projection reads its whole weight to make one output vector: it is a copy of the weight
through the SMs, and how near it runs to the copy floor depends on how the kernel spreads the rows of the
weight over the GPU. cuBLAS picks well for the MLP's big matrices and less well for the small ones (the
H200 profile in bench/results/decode_speed_cuda.json: gate/up at the copy floor, QKV and O at about 75% of
it, the LM head at 35%, its 32000 rows in 125 blocks of 256). Written as a multiply and a sum, a projection
becomes an Inductor reduction over the weight's rows, which spreads the rows over every SM and takes the
RMSNorm's scaling (and a bias) into the same kernel.

Which projections are written so is a measured choice (REDUCED). On the H200 (7B shape, bf16, 256 tokens;
bench/decode_compile_variants.py, bench/results/decode_compile_variants_gemv_cuda.json), none wins:
  every projection from cuBLAS 208.8 tok/s; the LM head as a reduction 205.4; QKV, O and the LM head 184.0;
  every projection 155.4, and 198.9 with Inductor's coordinate-descent tuning of the reductions' blocks.
So REDUCED is empty: the product runs cuBLAS, and the reductions stay for the variants bench to measure again
(another GPU, another torch). Only ever in the step compiled for one row: with several rows, one GEMM reads
the weight once for all of them, which a reduction per row would not.
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


# The product's choice for the compiled one-row step: none (see the module docstring for the measurement).
REDUCED: frozenset[Projection] = frozenset()


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, as_reduction: bool) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) -> [..., N]. As a reduction: the products in float32, summed in
    float32, rounded once at the end, as cuBLAS accumulates a bf16 GEMV; compiled, the float32 products are
    never stored (they are made and summed inside the kernel)."""
    if not as_reduction:
        return F.linear(x, weight, bias)
    out = (x.unsqueeze(-2).float() * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)
