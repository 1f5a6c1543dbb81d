"""One decode step at 1 and at N rows, per decode attention, and what the continuous batcher makes of it
(issue: decode speed, "many answers at once").

    python3 bench/decode_rows.py [--attentions flex,split] [--rows 8] [--rows-gemv cublas,triton]   # on an H200
    python bench/decode_rows.py --cpu                                    # CI: the plumbing, demo model, tiny

Builds the 7B-class model of bench/llava_7b.py in GPU memory (random bf16 weights, nothing saved); for each
decode attention builds Loupe's FastDecoder with N rows (steps compiled for 1 and N rows, as the engine does)
and measures, in one run:
- `decode_tok_s`: one answer of 256 tokens after a 659-token prompt (best of two), as the variants bench does;
- `step_ms`: the compiled step alone, replayed back to back (no token read), at 1 and at N rows;
- `profile`: per row count, kernel time and launches per step and the kernels that take the most time;
- `batcher`: N answers of 256 tokens handed to the continuous batcher at once, without and with a streamer
  per answer (Loupe's TimedStreamer, read by its own thread as an analyst's answer is): total tokens/s.
Writes bench/results/decode_rows_<cuda|cpu>.json (--out) after every stage.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llava_7b  # noqa: E402  (bench/, beside this script)
import torch  # noqa: E402
from decode_compile_variants import decode_rate  # noqa: E402
from decode_speed import copy_bandwidth_gbps, decoder_bytes  # noqa: E402

PROMPT = 659
NEW_TOKENS = 256


def step_ms(fast, rows: int, steps: int) -> float:
    """Milliseconds per compiled step of `rows` rows, replayed back to back (the GPU's time when it never waits)."""
    @torch.no_grad()
    def run() -> float:
        tokens = torch.zeros(rows, dtype=torch.long, device=fast.device)
        pos = torch.full((rows,), PROMPT + 128, dtype=torch.long, device=fast.device)
        penalty = torch.ones(rows, device=fast.device)
        for _ in range(3):
            fast.replay_step(tokens, pos, penalty, PROMPT + 128)
        llava_7b.sync()
        started = time.perf_counter()
        for _ in range(steps):
            fast.replay_step(tokens, pos, penalty, PROMPT + 128)
        llava_7b.sync()
        fast.seen.zero_()
        return (time.perf_counter() - started) / steps * 1e3

    return round(fast.on_own_thread(run), 4)


def kernel_profile(fast, rows: int, steps: int = 16) -> dict:
    """Kernel time, launches and the top kernels per step of `rows` rows (CUDA-graph replays included)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    on_gpu = fast.device.type == "cuda"

    @torch.no_grad()
    def run():
        tokens = torch.zeros(rows, dtype=torch.long, device=fast.device)
        pos = torch.full((rows,), PROMPT + 128, dtype=torch.long, device=fast.device)
        penalty = torch.ones(rows, device=fast.device)
        fast.replay_step(tokens, pos, penalty, PROMPT + 128)
        llava_7b.sync()
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
            for _ in range(steps):
                fast.replay_step(tokens, pos, penalty, PROMPT + 128)
            llava_7b.sync()
        fast.seen.zero_()
        return prof.key_averages()

    events = [e for e in fast.on_own_thread(run) if not on_gpu or getattr(e, "device_type", None) == DeviceType.CUDA]

    def us(event) -> float:
        return float(getattr(event, "self_device_time_total", 0.0) or 0.0) if on_gpu else float(event.self_cpu_time_total)

    top = sorted(events, key=us, reverse=True)[:14]
    return {"kernel_ms_per_step": round(sum(us(e) for e in events) / steps / 1e3, 4),
            "launches_per_step": round(sum(e.count for e in events) / steps, 1),
            "top": [{"kernel": e.key[:90], "us_per_step": round(us(e) / steps, 1), "per_step": e.count / steps}
                    for e in top]}


def batcher_run(fast, inputs: dict, count: int, new: int, tokenizer=None) -> dict:
    """`count` answers handed to a ContinuousBatcher at once; with `tokenizer`, each streams through a
    TimedStreamer read by its own thread."""
    from core.models.fast_decode_batcher import ContinuousBatcher

    batcher = ContinuousBatcher(fast)
    firsts: list[float | None] = [None] * count
    readers = []
    streamers = []
    if tokenizer is not None:
        from core.backends.token_streaming import TimedStreamer

        for index in range(count):
            streamer = TimedStreamer(tokenizer, 120.0)
            streamers.append(streamer)

            def read(index=index, streamer=streamer) -> None:
                for _text in streamer:
                    if firsts[index] is None:
                        firsts[index] = time.perf_counter()

            readers.append(threading.Thread(target=read, daemon=True))
        for reader in readers:
            reader.start()
    llava_7b.sync()
    started = time.perf_counter()
    requests = [batcher.submit(dict(inputs), new, 1.005, set(), streamers[i] if streamers else None)
                for i in range(count)]
    ends = []
    for request in requests:
        batcher.wait(request)
        ends.append(time.perf_counter())
    wall = time.perf_counter() - started
    for reader in readers:
        reader.join(timeout=10)
    made = sum(len(r.produced) for r in requests)
    return {"answers": count, "wall_s": round(wall, 3), "total_tok_s": round(made / wall, 1),
            "most_rows_at_once": batcher.most_rows_at_once}


def _rows_gemv(choice: str, on_gpu: bool) -> dict | None:
    """The rows' step's GEMV kernels for --rows-gemv (None: the product's choice). Triton's only on a GPU."""
    from core.models.decode_gemv import GemvKernel, Projection

    if choice not in ("product", "cublas", "triton"):
        raise SystemExit(f"--rows-gemv: unknown choice {choice!r} (product, cublas or triton)")
    if choice == "product":
        return None
    return dict.fromkeys(Projection, GemvKernel.TRITON) if choice == "triton" and on_gpu else {}


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--attentions", default="flex,split")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--rows-gemv", default="product",
                        help="the rows' step's projections, comma-separated runs: product (its choice), cublas, "
                             "triton (rows_gemv.py)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu
    from core.models import demo_model
    from core.models.decode_attention import DecodeAttention
    from core.models.fast_decode import FastDecoder

    tokenizer = demo_model._build_tokenizer()
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"decode_rows_{'cuda' if on_gpu else 'cpu'}.json"
    result: dict = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "torch": torch.__version__,
                    "rows": args.rows, "prompt_tokens": PROMPT, "attentions": {}}
    new, steps = (NEW_TOKENS, 100) if on_gpu else (8, 3)
    if on_gpu:
        result["hbm_GBps"] = round(copy_bandwidth_gbps(), 1)
        model = llava_7b.build_on_gpu(tokenizer)
    else:
        from core.serving.engine import load_engine
        from core.settings import load_settings

        model = load_engine(load_settings(device="cpu", fast_decode=False)).backend.model
    result["bytes_per_token_GB"] = round(decoder_bytes(model) / 1e9, 4)
    vocab = model.lm_head.weight.shape[0]
    ids = torch.randint(10, vocab, (1, PROMPT), generator=torch.Generator().manual_seed(0)).to(model.device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def save() -> None:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    choices = args.rows_gemv.split(",")
    for name, choice in itertools.product(args.attentions.split(","), choices):
        key = name if len(choices) == 1 else f"{name}/{choice}"
        entry: dict = {}
        result["attentions"][key] = entry
        fast = None
        try:
            fast = FastDecoder(model, 4096 if on_gpu else 1024, rows=args.rows, attention=DecodeAttention(name),
                               compile=on_gpu, rows_gemv=_rows_gemv(choice, on_gpu))
            entry["attention"] = str(fast.attention)
            entry["rows_gemv"] = {str(p): str(k) for p, k in fast.rows_gemv.items()}
            entry["compile_s"] = round(fast.warm_up(), 1)
            rate, _tokens = decode_rate(fast, inputs, new)
            entry["decode_tok_s"] = round(rate, 2)
            entry["step_ms"] = {str(rows): step_ms(fast, rows, steps) for rows in sorted({1, args.rows})}
            save()
            entry["profile"] = {str(rows): kernel_profile(fast, rows) for rows in sorted({1, args.rows})}
            save()
            entry["batcher_one_streamed"] = batcher_run(fast, inputs, 1, new, tokenizer)
            entry["batcher_no_streamers"] = batcher_run(fast, inputs, args.rows, new)
            entry["batcher_streamed"] = batcher_run(fast, inputs, args.rows, new, tokenizer)
        except Exception as exc:  # noqa: BLE001 - one attention failing keeps the other's figures
            entry["error"] = f"{type(exc).__name__}: {exc}"[:800]
        finally:
            if fast is not None:
                fast.close()
        save()
        print(json.dumps({key: {k: v for k, v in entry.items() if k != "profile"}}), flush=True)
    return result


if __name__ == "__main__":
    main()
