"""Continuous batching through the engine: N questions asked at once against one alone (issue: decode speed).

    python bench/concurrent_decode.py [--model DIR] [--rows 8] [--tokens 128]   # default: the demo model, CPU

Loads the model through Loupe's engine with `fast_decode_rows = rows`, asks one greedy question alone (best of
two), then N different questions at once from N threads (a barrier releases them together), each through the
scheduler as an analyst's or API client's question runs. Records each stream's decode tok/s (its own Answer),
the total throughput (all tokens over the wall time from release to last answer) against the one alone, and
the slowest stream against the one alone
(`measure`, also run by bench/decode_speed.py). Writes bench/results/concurrent_decode_<cuda|cpu>.json.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = ("Describe the picture in one long sentence.", "What colour dominates?", "图中有什么？",
             "List every object you see.", "Is there any text?", "What is in the top left corner?",
             "请用三句话描述这张图片。", "What would you call this picture?")


def measure(engine, image, count: int, tokens: int) -> dict:
    """`count` different questions asked at once (released together by a barrier) against one asked alone
    (best of two), through the engine's scheduler. Throughput on both sides is tokens over wall time from the
    ask to the last token (queue, vision and prefill included); a stream's speed is its own Answer's decode
    tokens/s against the one alone's."""
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]

    def ask(question: str):
        settings = engine.default_generation(max_new_tokens=tokens)
        started = time.perf_counter()
        answer = engine.ask([image], question, settings).collect()
        return answer, time.perf_counter() - started

    alone = [ask(questions[0]) for _ in range(2)]
    alone_answer, alone_wall = max(alone, key=lambda pair: pair[0].output_tokens / pair[1])
    alone_tok_s = alone_answer.tokens_per_s
    release = threading.Barrier(count + 1)
    answers: list = [None] * count

    def worker(index: int) -> None:
        release.wait()
        answers[index] = ask(questions[index])[0]

    batcher = getattr(engine.backend, "batcher", None)
    before = copy.deepcopy(batcher.clock) if batcher is not None else None
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    release.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    while batcher is not None and not batcher.idle:  # the loop ends just after the last answer's end
        time.sleep(0.001)
    made = sum(a.output_tokens for a in answers)
    streams = [a.tokens_per_s for a in answers]
    return {
        "rows": getattr(getattr(engine.backend, "fast_decoder", None), "rows", 1), "new_tokens": tokens,
        "alone_decode_tok_s": round(alone_tok_s, 1), "alone_wall_s": round(alone_wall, 3),
        "alone_throughput_tok_s": round(alone_answer.output_tokens / alone_wall, 1), "concurrent": count,
        "concurrent_wall_s": round(wall, 3), "concurrent_total_tok_s": round(made / wall, 1),
        "stream_decode_tok_s": [round(s, 1) for s in streams],
        f"concurrent{count}_throughput_over_single": round(made / wall / (alone_answer.output_tokens / alone_wall), 2),
        f"concurrent{count}_min_stream_over_alone": round(min(streams) / alone_tok_s, 3),
        "most_rows_at_once": batcher.most_rows_at_once if batcher is not None else 1,
        "all_answered": all(a is not None and a.output_tokens > 0 for a in answers),
        "stream_stages_s": [a.to_json()["timings_s"] for a in answers],
        "batcher_loop": _loop_spent(before, batcher.clock) if batcher is not None else None,
    }


def _loop_spent(before, after) -> dict:
    """The batcher loop's time during the concurrent run (core/models/fast_decode_batcher.LoopClock): the wall it
    ran, how much of it went to admitting arrivals and to waiting for the GPU, and its steps by width."""
    return {"running_s": round(after.running_s - before.running_s, 3),
            "admitting_s": round(after.admitting_s - before.admitting_s, 3),
            "waiting_for_gpu_s": round(after.waiting_s - before.waiting_s, 3),
            "steps_by_width": {str(w): n - before.steps[w] for w, n in sorted(after.steps.items())}}


def main() -> dict:
    import torch
    from PIL import Image

    from core.commands.common import quiet_libraries
    from core.serving.engine import load_engine
    from core.settings import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    quiet_libraries()
    on_gpu = torch.cuda.is_available()
    overrides = {"model": args.model} if args.model else {}
    engine = load_engine(load_settings(fast_decode_rows=args.rows, device="cuda" if on_gpu else "cpu", **overrides))
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), "teal").save(buffer, "PNG")
    image = engine.prepare_image(buffer.getvalue())
    result = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "model": engine.describe().name,
              "fast_status": engine.backend.fast_status, **measure(engine, image, args.rows, args.tokens)}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"concurrent_decode_{'cuda' if on_gpu else 'cpu'}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
