"""Decode GEMVs on the GPU: cuBLAS (F.linear) against Loupe's Triton kernels over their blocks, for the weight
shapes of the 7B decoders the product names, as a share of the copy bandwidth: one row (core/models/row_gemv.py)
or, with --rows N, the rows' step (core/models/rows_gemv.py).

    python bench/gemv_sweep.py [--out bench/results/gemv_sweep_cuda.json]             # on a GPU
    python bench/gemv_sweep.py --rows 8 --out bench/results/gemv_sweep_rows8_cuda.json

Each timing is a CUDA graph of back-to-back calls (as in the decode step) that rotate over enough copies of
the weight (>= 512 MB) that none is read from L2; the best of 5 replays. The copy bandwidth is measured in
the same run. Writes, per shape, cuBLAS's time, the best configs' times and the best config's largest
difference from cuBLAS's output.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from decode_speed import copy_bandwidth_gbps  # noqa: E402  (bench/, beside this script)

from core.models.row_gemv import GemvConfig, gemv  # noqa: E402
from core.models.rows_gemv import rows_gemv  # noqa: E402

# (name, N, K): the 7B Llama / Mistral / InternLM2 shape (hidden 4096, 8 KV heads, MLP 14336, vocab 92544)
# and Qwen2.5-7B's (hidden 3584, 4 KV heads, MLP 18944).
SHAPES = [("qkv", 6144, 4096), ("o", 4096, 4096), ("qwen_qkv", 4608, 3584), ("qwen_o", 3584, 3584),
          ("down", 4096, 14336), ("gate_up", 28672, 4096), ("lm_head", 92544, 4096)]
CALLS = 48  # per graph


def configs(rows: int) -> list[GemvConfig]:
    if rows > 1:  # MMAs: at least 16 weight rows a program; the loads feed an MMA, so stages pipeline them
        return [GemvConfig(bn, bk, warps, stages) for bn, bk, warps, stages in
                itertools.product((16, 32, 64), (64, 128, 256, 512), (2, 4, 8), (2, 3, 4)) if bn * bk <= 16384]
    found = []
    for bn, bk, warps, stages in itertools.product((2, 4, 8, 16, 32), (256, 512, 1024), (2, 4, 8), (1, 2, 3)):
        elements = bn * bk
        if elements < warps * 32 * 8 or elements > 16384:  # >= one 16-byte load a thread; <= 128 fp32 regs a thread
            continue
        found.append(GemvConfig(bn, bk, warps, stages))
    return found


def replay_us(body, calls: int) -> float:
    """Microseconds per call of `body` (which makes `calls` calls), captured in one CUDA graph after a warm-up
    run: the best of 5 replays."""
    body()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / calls)
    del graph
    return best


def graph_us(call, copies: int) -> float:
    """Microseconds per call: a graph of CALLS calls over the weight copies, best of 5 replays."""
    for i in range(copies):
        call(i)

    def body() -> None:
        for i in range(CALLS):
            call(i % copies)

    return replay_us(body, CALLS)


def measure_shape(n: int, k: int, gbps: float, candidates: list[GemvConfig], deadline: float, rows: int) -> dict:
    size = n * k * 2
    copies = max(2, -(-512 * 2**20 // size))
    weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
    x = torch.randn(rows, 1, k, device="cuda", dtype=torch.bfloat16)
    kernel = gemv if rows == 1 else rows_gemv
    floor_us = size / (gbps * 1e3)  # the weight's bytes at the copy rate (read only: the copy counts both)

    def entry(us: float) -> dict:
        return {"us": round(us, 2), "pct_of_copy": round(100 * floor_us / us, 1)}

    shape: dict = {"n": n, "k": k, "MB": round(size / 1e6, 1), "copy_floor_us": round(floor_us, 2),
                   "cublas": entry(graph_us(lambda i: F.linear(x, weights[i]), copies))}
    timed = []
    for c in candidates:
        if time.perf_counter() > deadline:
            shape["stopped"] = "time budget"
            break
        try:
            timed.append((graph_us(lambda i, c=c: kernel(x, weights[i], config=c), copies), c))
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped, and said
            shape.setdefault("failed", []).append(f"{c}: {type(exc).__name__}: {str(exc)[:120]}")
    timed.sort(key=lambda t: t[0])
    shape["triton_best"] = [{**entry(us), **vars(c)} for us, c in timed[:6]]
    if timed:
        diff = (kernel(x, weights[0], config=timed[0][1]).float() - F.linear(x, weights[0]).float()).abs().max()
        shape["max_abs_diff_vs_cublas"] = float(diff)
    return shape


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gemv_sweep_cuda.json"))
    parser.add_argument("--budget-s", type=float, default=300)
    parser.add_argument("--rows", type=int, default=1, help="rows of x: 1 (row_gemv.py) or 2-16 (rows_gemv.py)")
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "hbm_GBps": round(copy_bandwidth_gbps(), 1), "calls_per_graph": CALLS, "rows": args.rows,
                    "shapes": {}}
    candidates = configs(args.rows)
    result["configs_tried"] = len(candidates)
    torch.manual_seed(0)
    for number, (name, n, k) in enumerate(SHAPES, start=1):  # each shape its share of the budget
        shape = measure_shape(n, k, result["hbm_GBps"], candidates, started + args.budget_s * number / len(SHAPES),
                              args.rows)
        result["shapes"][name] = shape
        print(json.dumps({name: {"cublas": shape["cublas"], "best": shape["triton_best"][:1]}}), flush=True)
        torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    result["sweep_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
