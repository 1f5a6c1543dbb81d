"""Continuous batching through the engine: N questions asked at once against one alone (issue: decode speed).

    python bench/concurrent_decode.py [--model DIR] [--rows 8] [--tokens 128]   # default: the demo model, CPU

Loads the model through Loupe's engine with `fast_decode_rows = rows`, asks one greedy question alone (best of
two), then N different questions at once from N threads (a barrier releases them together), each through the
scheduler as an analyst's or API client's question runs. Records each stream's decode tok/s (its own Answer),
the total throughput (all tokens over the wall time from release to last answer) against the one alone, and
the slowest stream against the one alone. Writes bench/results/concurrent_decode_<cuda|cpu>.json.
"""
from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    quiet_libraries()
    on_gpu = torch.cuda.is_available()
    overrides = {"model": args.model} if args.model else {}
    engine = load_engine(load_settings(fast_decode_rows=args.rows, device="cuda" if on_gpu else "cpu", **overrides))
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), "teal").save(buffer, "PNG")
    image = engine.prepare_image(buffer.getvalue())
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.rows)]

    def ask(question: str):
        settings = engine.default_generation(max_new_tokens=args.tokens)
        return engine.ask([image], question, settings).collect()

    alone = [ask(questions[0]) for _ in range(2)]
    alone_tok_s = max(a.tokens_per_s for a in alone)
    release = threading.Barrier(args.rows + 1)
    answers: list = [None] * args.rows

    def worker(index: int) -> None:
        release.wait()
        answers[index] = ask(questions[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.rows)]
    for thread in threads:
        thread.start()
    release.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    tokens = sum(a.output_tokens for a in answers)
    streams = [a.tokens_per_s for a in answers]
    result = {
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "model": engine.describe().name,
        "rows": args.rows, "new_tokens": args.tokens, "fast_status": engine.backend.fast_status,
        "alone_decode_tok_s": round(alone_tok_s, 1), "concurrent": args.rows,
        "concurrent_wall_s": round(wall, 3), "concurrent_total_tok_s": round(tokens / wall, 1),
        "stream_decode_tok_s": [round(s, 1) for s in streams],
        f"concurrent{args.rows}_throughput_over_single": round(tokens / wall / alone_tok_s, 2),
        f"concurrent{args.rows}_min_stream_over_alone": round(min(streams) / alone_tok_s, 3),
        "most_rows_at_once": engine.backend.batcher.most_rows_at_once if engine.backend.batcher else 1,
        "all_answered": all(a is not None and a.output_tokens > 0 for a in answers),
    }
    out = ROOT / "bench" / "results" / f"concurrent_decode_{'cuda' if on_gpu else 'cpu'}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
