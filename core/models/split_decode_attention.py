"""Split-KV ("flash-decoding") attention for the fast path's decode step, as one Triton kernel of Loupe's own.

Why: a decode step's attention reads little (one query per head against the filled cache, ~3 MB a layer on
a 7B model at 900 positions) but needs parallelism: 8 KV heads are 8 blocks for 132 SMs. FlexAttention's
decoding path splits the cache, but it cost 0.37 ms a token in two kernels on the H200 for ~0.03 ms of reads
(bench/results/decode_speed_cuda.json's profile), and launches over the whole cache length.
How: the grid is (row, KV head, split). Each program takes the split's share of the row's FILLED positions
(read from `pos` on the device, so one compiled graph serves every length), computes its query group's
scores with one MMA per block (the group's query heads padded to 16, the smallest MMA), and keeps an online
softmax: it writes its running max, sum and weighted values. The last of a head's splits to finish (a count
per head, atomic) combines them and writes the output, so attention is one kernel a layer: combining in torch
ops took Inductor two more kernels, 0.16 ms a token on the H200 (bench/results/decode_rows_cuda.json). The
number of splits is chosen per row count to give about two programs per SM (at most 16).
Arithmetic: everything in float32. A bf16 (or fp16) value is exact in TF32 (10 mantissa bits), so the MMAs
run in TF32 for those caches and the scores are the exact products, accumulated in float32; the softmax's
probabilities enter the value product at TF32 (flash attention rounds them to bf16). Float32 caches use IEEE
products (no TF32), so float32 answers match generate() token for token. (Triton's interpreter also computes
bf16 MMAs wrongly, so converting first keeps the CPU tests on the same code.)
The kernel compiles into the step through torch.library.triton_op; on a CPU it runs under Triton's
interpreter only (the tests do that: TRITON_INTERPRET=1), never in the product (decode_attention.py).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BLOCK_T = 32  # cache positions per MMA
PROGRAMS_PER_SM = 2
MAX_SPLITS = 16  # the last program of a head holds every split's partial sums at once (registers)


@triton.jit
def _split_decode(q_ptr, k_ptr, v_ptr, pos_ptr, out_ptr, acc_ptr, m_ptr, l_ptr, count_ptr,
                  stride_qr, stride_qh, stride_kr, stride_kh, stride_kt, stride_vr, stride_vh, stride_vt, stride_or,
                  SCALE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, GROUP_P2: tl.constexpr,
                  DIM: tl.constexpr, SPLITS: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr):
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    kv_heads = tl.num_programs(1)
    filled = tl.load(pos_ptr + row).to(tl.int32) + 1
    chunk = tl.cdiv(tl.cdiv(filled, SPLITS), BLOCK) * BLOCK
    start = split * chunk
    end = tl.minimum(start + chunk, filled)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, DIM)
    in_group = g < GROUP
    q_rows = q_ptr + row * stride_qr + (kv_head * GROUP + g)[:, None] * stride_qh + d[None, :]
    q = tl.load(q_rows, mask=in_group[:, None], other=0.0).to(tl.float32)
    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    total = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, DIM], tl.float32)
    k_base = k_ptr + row * stride_kr + kv_head * stride_kh
    v_base = v_ptr + row * stride_vr + kv_head * stride_vh
    for t0 in range(start, end, BLOCK):
        t = t0 + tl.arange(0, BLOCK)
        in_range = t < end
        k = tl.load(k_base + t[None, :] * stride_kt + d[:, None], mask=in_range[None, :], other=0.0).to(tl.float32)
        scores = tl.dot(q, k, input_precision=PRECISION) * SCALE  # [GROUP_PAD, BLOCK]
        scores = tl.where(in_range[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        shrink = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        v = tl.load(v_base + t[:, None] * stride_vt + d[None, :], mask=in_range[:, None], other=0.0).to(tl.float32)
        acc = acc * shrink[:, None] + tl.dot(p, v, input_precision=PRECISION)
        total = total * shrink + tl.sum(p, axis=1)
        m = m_new
    # This split's partials [row, kv_head, split, g(, d)]; a split past the filled length writes -inf / 0 / 0.
    head = row * kv_heads + kv_head
    slot = (head * SPLITS + split) * GROUP + g
    tl.store(m_ptr + slot, m, mask=in_group)
    tl.store(l_ptr + slot, total, mask=in_group)
    tl.store(acc_ptr + slot[:, None] * DIM + d[None, :], acc, mask=in_group[:, None])
    # The head's last split to finish combines them all (the count is reset for the next step). Every thread's
    # stores come before the barrier, the barrier before the count's release: the combiner, after its acquire,
    # sees every split's partials (read from L2, past the SM's own L1).
    tl.debug_barrier()
    if tl.atomic_add(count_ptr + head, 1, sem="acq_rel", scope="gpu") == SPLITS - 1:
        s = tl.arange(0, SPLITS)
        c = tl.arange(0, GROUP_P2)
        real = (c < GROUP)[None, :]
        at = (head * SPLITS + s)[:, None] * GROUP + c[None, :]  # [SPLITS, GROUP_P2]
        maxes = tl.load(m_ptr + at, mask=real, other=float("-inf"), cache_modifier=".cg")
        top = tl.where(c < GROUP, tl.max(maxes, axis=0), 0.0)  # split 0 always holds a position: finite
        weight = tl.exp(maxes - top[None, :])  # a split past the filled length: 0
        sums = tl.sum(tl.load(l_ptr + at, mask=real, other=0.0, cache_modifier=".cg") * weight, axis=0)
        parts = tl.load(acc_ptr + at[:, :, None] * DIM + d[None, None, :], mask=real[:, :, None], other=0.0,
                        cache_modifier=".cg")
        out = tl.sum(parts * weight[:, :, None], axis=0) / tl.where(c < GROUP, sums, 1.0)[:, None]
        out_rows = out_ptr + row * stride_or + (kv_head * GROUP + c)[:, None] * DIM + d[None, :]
        tl.store(out_rows, out.to(out_ptr.dtype.element_ty), mask=(c < GROUP)[:, None])
        tl.atomic_xchg(count_ptr + head, 0)


def splits_for(rows: int, kv_heads: int, device: torch.device) -> int:
    """How many parts each row's cache is split into: about PROGRAMS_PER_SM programs per SM, a power of two,
    at most MAX_SPLITS."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 16
    wanted = max(1, PROGRAMS_PER_SM * sms // max(1, rows * kv_heads))
    return min(MAX_SPLITS, 1 << (wanted.bit_length() - 1))


@triton_op("loupe::split_decode_attention", mutates_args={"counts"})
def split_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                           counts: torch.Tensor, splits: int) -> torch.Tensor:
    """q [rows, heads, dim] (roped, contiguous); caches [rows, kv_heads, max_len, dim] (rows 0.. of them);
    pos [rows] each row's last filled position; counts [rows * kv_heads] int32, zero (and left at zero)
    -> [rows, heads * dim] in q's dtype."""
    rows, heads, dim = q.shape
    kv_heads = k_cache.shape[1]
    group = heads // kv_heads
    out = q.new_empty((rows, heads * dim))
    acc = q.new_empty((rows, kv_heads, splits, group, dim), dtype=torch.float32)
    m = q.new_empty((rows, kv_heads, splits, group), dtype=torch.float32)
    total = torch.empty_like(m)
    wrap_triton(_split_decode)[(rows, kv_heads, splits)](
        q, k_cache, v_cache, pos, out, acc, m, total, counts,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0),
        # The scale a compile-time constant: a Python float argument reaches Inductor's kernel as float64, which
        # made the scores float64 (and the second MMA's operands of two dtypes) on the H200.
        SCALE=1.0 / math.sqrt(dim), GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        GROUP_P2=triton.next_power_of_2(group), DIM=dim, SPLITS=splits, BLOCK=BLOCK_T,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4,  # see the module docstring
    )
    return out


def split_attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                 counts: torch.Tensor) -> torch.Tensor:
    """q [rows, heads, 1, dim] (roped); caches [rows, kv_heads, max_len, dim]; pos [rows] -> [rows, 1, heads * dim]."""
    rows, heads, _, dim = q.shape
    splits = splits_for(rows, k_cache.shape[1], q.device)
    out = split_decode_attention(q.reshape(rows, heads, dim).contiguous(), k_cache, v_cache, pos, counts, splits)
    return out.view(rows, 1, heads * dim)
