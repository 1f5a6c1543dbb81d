"""Where Compare's time goes on the fast path: 4 templates over one image against one, on the 7B shape (GPU only).

    python bench/compare_breakdown.py [--model-dir /tmp/loupe-7b] [--out bench/results/compare_breakdown_cuda.json]

Three measurements in one run, each against its anchor of the same run:
1. the split-KV decode attention alone (split_decode_attention.py) for 1 row, 8 rows, and Compare's case (4
   filled rows of an 8-row step, 4 empty), for each number of splits: what the rows' step's attention costs
   and whether more splits would cut it. A CUDA graph of 32 layers' calls over 32 layers' caches (nothing from
   L2), best of 5 replays;
2. Compare through the backend's batch path (bench/decode_speed.py's `batch4_over_single`), 64 tokens a row,
   interleaved runs: each run's wall and its answers' stage timings (preprocess, vision, prefill, decode);
3. one profiled run of each: device kernel time against wall time, kernel launches, and the host calls that
   waited for the device (synchronisations).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from decode_speed import _png, build_7b  # noqa: E402  (bench/, beside this script)
from gemv_sweep import replay_us  # noqa: E402
from llava_7b import timed  # noqa: E402

RUNS = 5
LAYERS = 32


def attention_us(rows: int, filled: list[int], splits: int) -> float:
    """Microseconds per layer of split_decode_attention for `rows` rows filled to `filled` positions."""
    from core.models.split_decode_attention import split_decode_attention

    kv, heads, dim, max_len = 8, 32, 128, 4096
    caches = [(torch.randn(rows, kv, max_len, dim, device="cuda", dtype=torch.bfloat16),
               torch.randn(rows, kv, max_len, dim, device="cuda", dtype=torch.bfloat16)) for _ in range(LAYERS)]
    q = torch.randn(rows, heads, dim, device="cuda", dtype=torch.bfloat16)
    pos = torch.tensor([max(0, f - 1) for f in filled], device="cuda")
    counts = torch.zeros(rows * kv, dtype=torch.int32, device="cuda")

    def step() -> None:
        for k, v in caches:
            split_decode_attention(q, k, v, pos, counts, splits)

    best = replay_us(step, LAYERS)
    caches.clear()
    torch.cuda.empty_cache()
    return round(best, 2)


def attention_table(prompt: int) -> dict:
    from core.models.split_decode_attention import splits_for

    cases = {"1_row": (1, [prompt]), "8_rows": (8, [prompt] * 8), "compare_4_of_8": (8, [prompt] * 4 + [1] * 4)}
    table: dict = {"filled_positions": prompt}
    for name, (rows, filled) in cases.items():
        table[name] = {"product_splits": splits_for(rows, 8, torch.device("cuda")),
                       "us_per_layer": {str(s): attention_us(rows, filled, s) for s in (2, 4, 8, 16)}}
    return table


def profiled(call) -> dict:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = timed(call)
    events = prof.key_averages()
    on_device = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
    kernel_us = sum(float(getattr(e, "self_device_time_total", 0.0) or 0.0) for e in on_device)
    waits = [e for e in events if any(w in e.key for w in ("Synchronize", "cudaMemcpy", "aten::item",
                                                             "_local_scalar_dense", "aten::nonzero", "aten::equal"))]
    host = sorted((e for e in events if getattr(e, "device_type", None) != DeviceType.CUDA),
                  key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"wall_ms": round(wall * 1e3, 2), "kernel_ms": round(kernel_us / 1e3, 2),
            "device_idle_ms": round(wall * 1e3 - kernel_us / 1e3, 2),
            "kernel_launches": int(sum(e.count for e in on_device)),
            "waits": [{"op": e.key[:60], "calls": e.count, "cpu_ms": round(e.cpu_time_total / 1e3, 2)} for e in waits],
            "host_top_self_ms": [{"op": e.key[:60], "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2)}
                                 for e in host]}


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", default="/tmp/loupe-7b")
    parser.add_argument("--skip-attention", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "compare_breakdown_cuda.json"))
    args = parser.parse_args()
    from PIL import Image

    from core.commands.common import quiet_libraries
    from core.serving.engine import load_engine
    from core.settings import load_settings

    quiet_libraries()
    out = Path(args.out)
    result: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    def save() -> None:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    try:
        result["attention"] = {} if args.skip_attention else attention_table(700)
    except Exception as exc:  # noqa: BLE001 - the Compare figures still come
        result["attention"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    save()
    print(json.dumps({"attention": result["attention"]}), flush=True)
    target = Path(args.model_dir)
    if not (target / "config.json").is_file():
        build_7b(target)
    started = time.perf_counter()
    engine = load_engine(load_settings(model=str(target), device="cuda", fast_decode_rows=8))
    result["load_s"] = round(time.perf_counter() - started, 1)
    backend = engine.backend
    prepared = engine.prepare_image(_png(Image.new("RGB", (1280, 720), "teal")))
    question = "请详细描述这张图片中的表格内容，包括标题、每一列的名称、每一行的数值，以及合计是多少？"
    prompts = [question, "What is the title?", "List four items from left to right.", "Is there a signature?"]
    four = [engine.build_query([prepared], q, engine.default_generation(max_new_tokens=64)) for q in prompts]
    backend.answer_batch(four[:2], min_new_tokens=8)  # warm-up
    runs: dict[str, list] = {"single": [], "batch4": []}
    for _ in range(RUNS):
        for name, queries in (("single", four[:1]), ("batch4", four)):
            answered: list = []  # (Answer, new ids) per query
            wall = timed(lambda queries=queries, answered=answered: answered.extend(
                backend.answer_batch(queries, min_new_tokens=64)))
            runs[name].append({"wall_s": round(wall, 4),
                               "timings_s": answered[0][0].to_json()["timings_s"],
                               "output_tokens": [len(ids) for _, ids in answered]})
    for name, items in runs.items():
        walls = [r["wall_s"] for r in items]
        result[name] = {"min_s": min(walls), "median_s": round(statistics.median(walls), 4), "runs": items}
    result["batch4_over_single_min"] = round(result["batch4"]["min_s"] / result["single"]["min_s"], 3)
    result["batch4_over_single_median"] = round(result["batch4"]["median_s"] / result["single"]["median_s"], 3)
    save()
    result["profile"] = {name: profiled(lambda queries=queries: backend.answer_batch(queries, min_new_tokens=64))
                         for name, queries in (("single", four[:1]), ("batch4", four))}
    save()
    print(json.dumps({k: v for k, v in result.items() if k not in ("attention",)})[:3000])
    return result


if __name__ == "__main__":
    main()
